# napari-mltomo developer commands. Each target sets up .venv itself when it is missing.
#   make demo    synthetic data set + reference-free 3-class refinement, prints ARI and angle error
#   make test    ruff, then the test suite (GUI tests run under Xvfb via pytest-xvfb)
#   make bench   every script in benchmarks/ (under Xvfb when there is no display)
#   make accuracy  reference-free runs on subtomograms of real proteins against an oracle (about 2.5 hours, estimated)
#   make screenshots  docs/images/*.png from a real run in napari (under Xvfb when there is no display)
#   make lint    ruff + npe2 manifest validation
#   make clean   caches, build products and demo output (make distclean also removes .venv)

PYTHON ?= python3
VENV   ?= .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BENCHMARKS := $(sort $(wildcard benchmarks/*.py))
# Qt needs a display: without one, GUI scripts run inside a private Xvfb server.
XRUN   := $(if $(DISPLAY),,xvfb-run -a -s "-screen 0 1920x1200x24")

# One shell per recipe, failing on the first error.
.ONESHELL:
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: venv demo test bench accuracy screenshots lint clean distclean

venv: $(STAMP)

# Reinstall whenever pyproject.toml changes; the stamp is written only after a successful install.
$(STAMP): pyproject.toml
	if [ ! -x "$(VPY)" ]; then
		echo "creating $(VENV) with $$(command -v $(PYTHON))"
		$(PYTHON) -m venv "$(VENV)"
	fi
	"$(VPY)" -m pip install --upgrade --quiet pip
	"$(VPY)" -m pip install -e '.[test]'
	touch "$(STAMP)"

demo: venv
	"$(VENV)/bin/ml_tomo" demo demo_run

# Two pytest workers: many tests leave a core idle (start-up, files, Qt), so two at once finish sooner.
test: venv
	"$(VENV)/bin/ruff" check .
	"$(VPY)" -m pytest -q -n 2 --dist worksteal

bench: venv
	if [ -z "$(BENCHMARKS)" ]; then echo "no benchmarks/*.py yet"; exit 0; fi
	for script in $(BENCHMARKS); do
		echo "== $$script"
		$(XRUN) "$(VPY)" "$$script"
	done

accuracy: venv
	"$(VPY)" benchmarks/accuracy/proteins.py

screenshots: venv
	$(XRUN) "$(VPY)" docs/make_screenshots.py

lint: venv
	"$(VENV)/bin/ruff" check .
	"$(VPY)" -m npe2 validate napari-mltomo

clean:
	rm -rf build dist demo_run .pytest_cache .ruff_cache src/*.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf "$(VENV)"
