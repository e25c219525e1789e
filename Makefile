# Two entry points for a fresh clone: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	# SAM 2's code (an sdist): built against the torch above, without its CUDA extension
	SAM2_BUILD_CUDA=0 $(VENV)/bin/pip install -q --no-build-isolation 'sam2==1.1.0'
	$(VENV)/bin/pip install -q -e '.[convert,dev,openvino,ray]'
	# samexporter, a real client of the ONNX contracts (tests/test_onnx_contracts.py). Its runtime needs
	# only onnxruntime, opencv and Pillow (installed above); --no-deps because it pins torch 2.10.
	$(VENV)/bin/pip install -q --no-deps 'samexporter==0.5.0'
	# a real browser for the page test of `edgesam serve` (tests/test_serve.py): Debian's Chromium and its driver
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/edgesam demo --out edgesam-demo

# EDGESAM_REQUIRE_SETUP=1: a dependency that setup installs is required, its absence fails the run
test: $(STAMP)
	EDGESAM_REQUIRE_SETUP=1 $(VENV)/bin/python -m pytest -q

test-slow: $(STAMP)
	EDGESAM_REQUIRE_SETUP=1 $(VENV)/bin/python -m pytest -q -m slow
	EDGESAM_FUZZ_EXAMPLES=2000 $(VENV)/bin/python -m pytest -q tests/test_robustness.py tests/test_amg.py \
		-k "apply_coords or predict_valid or rle or regions_match" --hypothesis-show-statistics

.PHONY: setup demo test test-slow
