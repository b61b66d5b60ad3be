# avatar3d — `make test` and `make demo` set everything up from scratch (see README).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEPS_STAMP := $(VENV)/.deps-stamp
EDITABLE_STAMP := $(VENV)/.editable-stamp
NVCC ?= nvcc
CUDA_ARCH ?= sm_90

.PHONY: all venv build test soak demo bench cuda-check test-browser clean

all: test

# torch first, pinned; everything after runs under the constraints file so nothing replaces it.
# mediapipe goes in without its declared deps (jax, GUI OpenCV); requirements/mediapipe.txt lists what it uses.
$(DEPS_STAMP): requirements/*.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c requirements/constraints.txt -r requirements/base.txt -r requirements/mediapipe.txt \
		-r requirements/extras.txt -r requirements/dev.txt
	$(PIP) install -q --no-deps -c requirements/constraints.txt mediapipe==0.10.21
	touch $@

venv: $(DEPS_STAMP)

# The package is installed editable once (without building); the extension is built in place,
# incrementally, with no build isolation so the build uses the venv's torch.
$(EDITABLE_STAMP): $(DEPS_STAMP) pyproject.toml
	AVATAR3D_SKIP_EXT=1 $(PIP) install -q --no-build-isolation --no-deps -e .
	touch $@

build: $(EDITABLE_STAMP)
	$(PY) setup.py -q build_ext --inplace
	@$(PY) -c "import torch, avatar3d._C" || { echo "the C++ extension avatar3d._C did not build"; exit 1; }

test: build
	AVATAR3D_REQUIRE_EXT=1 $(PY) -m pytest -q

# Random tests with fresh seeds (CI uses the fixed list in tests/conftest.py), for as long as asked:
#   make soak SOAK_RUNS=500            make soak SOAK_RUNS=0 SOAK_MINUTES=60 SOAK_TESTS="tests/test_training.py"
SOAK_RUNS ?= 100
SOAK_MINUTES ?= 0
SOAK_TESTS ?= $(SOAK_DEFAULT_TESTS)
SOAK_DEFAULT_TESTS := tests/test_raster_native.py tests/test_raster_reference.py tests/test_training.py \
	tests/test_gaussian_model.py tests/test_binding.py tests/test_tracking_fit.py
soak: build
	$(PY) tools/soak.py --runs $(SOAK_RUNS) --minutes $(SOAK_MINUTES) --json outputs/soak.json $(SOAK_TESTS)

demo: build
	$(VENV)/bin/avatar3d demo --out outputs/demo

bench: build
	$(VENV)/bin/avatar3d bench raster --json outputs/bench_raster.json

# Compile the torch-free CUDA kernel files for Hopper (no GPU needed): a CUDA compile error fails CI.
cuda-check:
	@mkdir -p build/cuda-check
	@for f in cuda_ext/*_cuda.cu; do \
		echo "nvcc -arch=$(CUDA_ARCH) $$f"; \
		$(NVCC) -std=c++17 -O2 -arch=$(CUDA_ARCH) -Icuda_ext/include -c $$f -o build/cuda-check/$$(basename $$f .cu).o || exit 1; \
	done

# The real-browser viewer test (opt-in: needs chromium + chromium-driver from Debian, selenium from PyPI).
test-browser: build
	$(PIP) install -q -c requirements/constraints.txt -r requirements/browser.txt
	AVATAR3D_BROWSER_TEST=1 $(PY) -m pytest tests/test_viewer_browser.py -q

clean:
	rm -rf build avatar3d/_C*.so *.egg-info
