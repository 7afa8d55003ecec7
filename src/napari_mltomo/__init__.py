"""napari-mltomo: maximum-likelihood subtomogram alignment and classification."""

__version__ = "0.1.0"
__all__ = ["__version__"]
