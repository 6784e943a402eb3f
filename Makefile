# Neural Human: entry points. Every target sets up what it needs (`make setup` is idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
TORCH_VERSION := 2.13.0

.PHONY: setup test test-fast lint demo bench data body addon clean help

help:
	@echo "make demo    run the end-to-end demo on the bundled demo actor (writes demo_output/)"
	@echo "make test    ruff, then the whole test suite (CPU only; GPU tests run where CUDA is present)"
	@echo "make bench   print speed figures as JSON"
	@echo "make lint    ruff check (style, imports, complexity)"
	@echo "make body    rebuild the bundled demo body model from ../shared/data/makehuman"
	@echo "make data    render the 'demo' synthetic dataset into data/demo"
	@echo "make addon   build the Blender extension zip into dist/"
	@echo "make setup   create .venv with the pinned packages"

# A machine whose system Python already has torch (a GPU machine with CUDA torch) keeps that torch:
# the venv then sees system packages and torch is not reinstalled. Elsewhere torch==$(TORCH_VERSION) (CPU wheel).
$(STAMP): requirements.txt constraints.txt
	@if $(PYTHON) -c "import torch" 2>/dev/null; then \
		echo "setup: using the system torch ($$($(PYTHON) -c 'import torch;print(torch.__version__)'))"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
		$(VENV)/bin/pip install -q torch==$(TORCH_VERSION); \
	fi
	$(VENV)/bin/pip install -q -r requirements.txt -c constraints.txt
	@touch $(STAMP)

setup: $(STAMP)

# The suite runs only on a lint-clean tree: ruff's findings (complexity included) fail `make test` as tests do.
test: lint
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: lint
	$(PY) -m pytest -q -m "not slow" -p no:cacheprovider

lint: setup
	$(VENV)/bin/ruff check .

demo: setup
	$(PY) -m server demo --out demo_output

bench: setup
	$(PY) -m server bench

body: setup
	$(PY) -m server build-demo-body

data: setup
	$(PY) -m server make-data --preset demo --out data/demo --force

clean:
	rm -rf build dist demo_output .pytest_cache .ruff_cache

# The extension zip, built and validated with Blender's own extension tool from the bpy wheel (no Blender binary).
BLENDER_EXT = $(PY) -c "import glob, os, runpy, sys, importlib.util as u; \
	p = glob.glob(os.path.join(u.find_spec('bpy').submodule_search_locations[0], '*', 'scripts', 'addons_core', \
	'bl_pkg', 'cli', 'blender_ext.py'))[0]; sys.argv[0] = p; runpy.run_path(p, run_name='__main__')"
ADDON_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' blender_manifest.toml)

addon: setup
	rm -rf build/addon && mkdir -p build/addon/neural_human dist
	cp -r neural_human_addon/. build/addon/neural_human/
	cp blender_manifest.toml build/addon/neural_human/
	find build/addon -name __pycache__ -prune -exec rm -rf {} +
	$(BLENDER_EXT) build --source-dir build/addon/neural_human --output-dir dist
	$(BLENDER_EXT) validate dist/neural_human-$(ADDON_VERSION).zip
	@echo "built dist/neural_human-$(ADDON_VERSION).zip (install: Blender > Preferences > Get Extensions > Install from Disk)"
