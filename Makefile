# Neural Human: entry points. Every target sets up what it needs (`make setup` is idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
TORCH_VERSION := 2.13.0

.PHONY: setup test test-fast lint demo bench data body addon clean help test-blender test-blender-all test-blender-ci blender-venv gpu-check gpu-site

help:
	@echo "make demo    run the end-to-end demo on the bundled demo actor (writes demo_output/)"
	@echo "make test    ruff, then the whole test suite (CPU only; GPU tests run where CUDA is present)"
	@echo "make bench   print speed figures as JSON"
	@echo "make lint    ruff check (style, imports, complexity)"
	@echo "make body    rebuild the bundled demo body model from ../shared/data/makehuman"
	@echo "make data    render the 'demo' synthetic dataset into data/demo"
	@echo "make addon   build the Blender extension zip into dist/"
	@echo "make setup   create .venv with the pinned packages"
	@echo "make test-blender BLENDER=4.2|4.5|5.0|5.3   the Blender-facing tests on that bpy (a light venv per version)"
	@echo "make test-blender-all                       the same on every version of BLENDER_VERSIONS"
	@echo "make test-blender-ci                        CI's subset of it on every version"

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
	rm -rf build dist demo_output .pytest_cache .ruff_cache .venv-blender-*

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

# ---- The Blender versions users have (see README, "Supported Blender versions") ----------------------------------
# `make test-blender BLENDER=4.2` makes a light venv .venv-blender-4.2 (that bpy, its numpy, pytest, httpx, pillow;
# never torch: the add-on runs on Blender's own Python) and runs the Blender-facing suites there. The server those
# tests need is started from the main venv: NEURAL_HUMAN_SERVER_PYTHON names its interpreter. Tests that need torch
# in-process skip with a reason there (the main suite, `make test`, runs them on bpy 5.0.1).
BLENDER ?= 5.0
BLENDER_VERSIONS ?= 4.2 4.5 5.0 5.3
BPY_4.2 := 4.2.23
BPY_4.5 := 4.5.15
BPY_5.0 := 5.0.1
BPY_5.3 := 5.3.0
# bpy up to 5.0 is built for Python 3.11 and numpy<2; 5.1 and later for Python 3.13 and numpy>=2.2.
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13 /usr/bin/python3.13) python3.13)
BLENDER_PYTHON = $(if $(filter 4.% 5.0,$(BLENDER)),$(PYTHON),$(PYTHON313))
BLENDER_NUMPY = $(if $(filter 4.% 5.0,$(BLENDER)),numpy==1.26.4,numpy>=2.2)
BLENDER_VENV = .venv-blender-$(BLENDER)
BLENDER_STAMP = $(BLENDER_VENV)/.stamp-$(BPY_$(BLENDER))
NEURAL_HUMAN_SERVER_PYTHON ?= $(abspath $(PY))
BLENDER_TESTS ?= tests/addon
BLENDER_PYTEST_ARGS ?=

$(BLENDER_STAMP):
	@test -n "$(BPY_$(BLENDER))" || { echo "BLENDER=$(BLENDER): pick one of $(BLENDER_VERSIONS)"; exit 2; }
	rm -rf $(BLENDER_VENV)
	$(BLENDER_PYTHON) -m venv $(BLENDER_VENV)
	$(BLENDER_VENV)/bin/pip install -q "bpy==$(BPY_$(BLENDER))" "$(BLENDER_NUMPY)" pytest==9.2.0 httpx==0.28.1 pillow==13.0.0
	@! $(BLENDER_VENV)/bin/python -c "import torch" 2>/dev/null || { echo "torch must not be in $(BLENDER_VENV)"; exit 1; }
	@touch $@

blender-venv: $(BLENDER_STAMP)

ADDON_ZIP = $(abspath dist/neural_human-$(ADDON_VERSION).zip)
# The zip is built once: test-blender-all builds it and hands it to every version (NEURAL_HUMAN_ADDON_ZIP).
NEURAL_HUMAN_ADDON_ZIP ?=

test-blender: setup blender-venv $(if $(NEURAL_HUMAN_ADDON_ZIP),,addon)
	NEURAL_HUMAN_SERVER_PYTHON=$(NEURAL_HUMAN_SERVER_PYTHON) NEURAL_HUMAN_ADDON_ZIP=$(or $(NEURAL_HUMAN_ADDON_ZIP),$(ADDON_ZIP)) \
		$(BLENDER_VENV)/bin/python -m pytest -q -p no:cacheprovider $(BLENDER_PYTEST_ARGS) $(BLENDER_TESTS)

# CI's share of each version (.ci/run): the whole Blender-facing suite on every version does not fit CI's ~25 minutes
# on 2 cores beside `make test` (which runs all of it on 5.0.1), so CI runs a representative subset per version: the
# zip installed/enabled/disabled/re-enabled, the compositor, mesh import (the action API), one end-to-end render.
BLENDER_CI_TESTS := tests/addon/blender/test_packaging.py tests/addon/blender/test_compositing.py \
	tests/addon/blender/test_mesh_import.py \
	tests/addon/blender/test_addon_e2e.py::test_render_frame_places_actor_where_the_camera_sees_the_rig

test-blender-ci:
	$(MAKE) --no-print-directory test-blender-all BLENDER_TESTS="$(BLENDER_CI_TESTS)"

# Every version runs even when one fails; the target fails afterwards, naming the versions that failed.
test-blender-all: setup addon
	@failed=""; for v in $(BLENDER_VERSIONS); do \
		echo "== Blender $$v"; start=$$(date +%s); \
		$(MAKE) --no-print-directory test-blender BLENDER=$$v NEURAL_HUMAN_ADDON_ZIP=$(ADDON_ZIP) || failed="$$failed $$v"; \
		echo "== Blender $$v: $$(( $$(date +%s) - start )) s"; done; \
	if [ -n "$$failed" ]; then echo "== failed on Blender$$failed"; exit 1; fi

# ---- A GPU machine -------------------------------------------------------------------------------------------------
# `make gpu-check` runs what only a GPU can tell, with GPU_PY (a Python whose torch has CUDA, the server's packages
# importable): the CUDA bench (fast vs reference, the precisions, the compiled point network, the full 5 mm reference
# mesh) with a profile of one frame and one mesh, then the CUDA tests. Everything lands in GPU_OUT: bench.json,
# cuda_{frame,mesh}_{ops.txt,trace.json.gz}, test_cuda.log.
# For a GPU machine without a package registry: `make gpu-site` (here) packs the server's packages that such a machine
# lacks besides torch, numpy, scipy and scikit-image (spconv and its build helpers, smplx, PyMCubes, the HTTP stack:
# GPU_SITE_PACKAGES, at the versions of constraints.txt) for its Python (GPU_PYTHON_VERSION) into
# dist/gpu-site-py$(GPU_PYTHON_VERSION).tar.xz (~50 MB); there, unpack it and put it on PYTHONPATH (README, "Speed").
GPU_PY ?= $(PY)
GPU_OUT ?= gpu_check
GPU_PYTHON_VERSION ?= 3.12
GPU_SITE_PACKAGES := spconv-cu118 cumm-cu118 pccm ccimport fire termcolor lark smplx PyMCubes fastapi starlette \
	uvicorn pydantic pydantic_core annotated-types annotated-doc typing-inspection opentelemetry-api
GPU_PLATFORMS := manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64

gpu-check:
	mkdir -p $(GPU_OUT)
	$(GPU_PY) -m server bench --device cuda --no-farm --full-reference --compile --profile $(GPU_OUT) \
		--json $(GPU_OUT)/bench.json
	set -o pipefail; $(GPU_PY) -m pytest -q -p no:cacheprovider -rs tests/server/neural_body/test_cuda.py \
		2>&1 | tee $(GPU_OUT)/test_cuda.log

gpu-site: setup
	rm -rf build/gpu-site && mkdir -p build/gpu-site dist
	$(VENV)/bin/pip install -q --no-deps --only-binary=:all: --implementation cp \
		--python-version $(GPU_PYTHON_VERSION) $(addprefix --platform ,$(GPU_PLATFORMS)) --target build/gpu-site \
		$$(for p in $(GPU_SITE_PACKAGES); do grep -i -m1 "^$$p==" constraints.txt || echo "$$p"; done)
	XZ_OPT="-6 -T0" tar -C build/gpu-site -cJf dist/gpu-site-py$(GPU_PYTHON_VERSION).tar.xz .
	@ls -l dist/gpu-site-py$(GPU_PYTHON_VERSION).tar.xz
