# Every target bootstraps .venv itself; the stamp makes it quick once installed.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# The training extra (PyTorch) for the tests of `galpipe morphology train`; `make demo` and the
# worker image run the networks with ONNX Runtime and never need it.
TRAIN_STAMP := $(VENV)/.installed-train
# A CPU build of torch: the one on this disk when there is one, else PyTorch's CPU index (PyPI's
# default Linux wheel is a CUDA build of several GB, which tests on a CPU have no use for), and
# PyPI's own build where that index cannot be reached.
TORCH_CPU_WHEEL := $(firstword $(wildcard /opt/wheels/torch-*+cpu-cp311-*.whl))
# checkov pins its own dependency versions (an older boto3), so it gets a venv of its own.
CHECKOV := .tools/checkov/bin/checkov

.PHONY: install system-packages demo test lint format bench clean

# The Debian packages the tests run (fitsverify, chromium, prometheus, kubectl): installed when
# this runs as root with apt-get, otherwise named with the command that installs them.
install: $(STAMP) $(TRAIN_STAMP) $(CHECKOV) system-packages

system-packages:
	@scripts/system-packages.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,sim,dev,deploy,sdss]'
	touch $(STAMP)

$(TRAIN_STAMP): $(STAMP)
	@if [ -n "$(TORCH_CPU_WHEEL)" ]; then \
	  $(BIN)/python -m pip install --quiet '$(TORCH_CPU_WHEEL)'; \
	else \
	  $(BIN)/python -m pip install --quiet --timeout 20 --retries 1 'torch>=2.9' \
	    --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple \
	  || $(BIN)/python -m pip install --quiet 'torch>=2.9'; \
	fi
	$(BIN)/python -m pip install --quiet -e '.[train]'
	touch $(TRAIN_STAMP)

$(CHECKOV):
	test -x .tools/checkov/bin/python || $(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet 'checkov>=3.2'

demo: $(STAMP)
	$(BIN)/galpipe demo

# Lint first (style, types and the architecture's import contracts), then every test; the run
# ends by naming any test skipped for a missing tool and the command that installs it.
# One process per core, at most 4 (each starts its own servers), every test file in one of
# them so that a file's module fixtures (a terraform apply, a moto server) are made once: on 2
# cores 12 minutes instead of 20, the terraform and chaos runs waiting beside the CPU-bound
# tests. `pytest` alone runs them in one process.
test: install lint
	$(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check services tests bench scripts
	$(BIN)/ruff format --check services tests bench scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format services tests bench scripts
	$(BIN)/ruff check --fix services tests bench scripts

bench: $(STAMP)
	@set -e; for f in bench/[!_]*.py; do echo "== $$f"; $(BIN)/python $$f; done

clean:
	rm -rf $(VENV) .tools build *.egg-info services/*.egg-info .pytest_cache .ruff_cache .mypy_cache
