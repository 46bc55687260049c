# Every target bootstraps .venv itself; the stamp makes it quick once installed.
PYTHON  ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# checkov pins its own dependency versions (an older boto3), so it gets a venv of its own.
CHECKOV := .tools/checkov/bin/checkov

.PHONY: install system-packages demo test lint format bench clean

# The Debian packages the tests run (fitsverify, chromium, prometheus, kubectl): installed when
# this runs as root with apt-get, otherwise named with the command that installs them.
install: $(STAMP) $(CHECKOV) system-packages

system-packages:
	@scripts/system-packages.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[local,sim,dev,deploy]'
	touch $(STAMP)

$(CHECKOV):
	test -x .tools/checkov/bin/python || $(PYTHON) -m venv .tools/checkov
	.tools/checkov/bin/python -m pip install --quiet 'checkov>=3.2'

demo: $(STAMP)
	$(BIN)/galpipe demo

# Lint first (style, types and the architecture's import contracts), then every test; the run
# ends by naming any test skipped for a missing tool and the command that installs it.
test: install lint
	$(BIN)/python -m pytest -q

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
