"""Dock widgets of the napari front end (Qt); each is loaded through the manifest by its module path."""
