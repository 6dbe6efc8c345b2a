# Every target does its own set-up: on a fresh machine `make demo` and `make test` just work.
VENV ?= .venv
PY := $(VENV)/bin/python
# TORCH: the PyTorch requirement, installed before blipcap. The default is the CPU build
# (a few hundred MB; PyPI's Linux wheel is the multi-GB CUDA build). Pinned with its "+cpu"
# label, so a CUDA wheel can never be picked in its place.
# TORCH_INDEX: where that build lives, added with --extra-index-url so that an index or
# wheel folder configured for pip (pip.conf, PIP_FIND_LINKS) still counts. When it cannot
# be reached, TORCH comes from the configured indexes alone (pip would retry it for minutes).
#   CUDA (PyPI's build):   make demo TORCH=torch TORCH_INDEX=
#   macOS (no +cpu label): make demo TORCH=torch==2.13.0
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
EXTRAS ?= all,dev

.PHONY: setup system-deps demo test test-fast lint format bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ] && $(PY) scripts/reachable.py "$(TORCH_INDEX)/"; then \
	  index="--extra-index-url $(TORCH_INDEX)"; \
	elif [ -n "$(TORCH_INDEX)" ]; then \
	  echo "$(TORCH_INDEX) cannot be reached: $(TORCH) from pip's configured indexes"; \
	fi; \
	set -x; $(PY) -m pip install -q "$(TORCH)" $$index
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

system-deps:
	bash scripts/system-deps.sh

## Caption the sample photos with the default model (downloads it on first use).
demo: setup
	$(PY) scripts/sample_photos.py examples/photos
	$(VENV)/bin/blipcap caption examples/photos --format jsonl

## Everything the tests need, then the whole suite. Each folder runs in its own
## process: the integration tests load torch, ONNX Runtime, OpenCV, Ray and
## PostgreSQL clients into one process, and a fresh process per suite keeps
## them from sharing native state (memory measurements included). Exit 5 (no
## test collected) is not a failure.
SUITES := tests/unit tests/integration tests/e2e
PYTEST_ARGS ?=
define run_suites
	@status=0; for suite in $(SUITES); do \
	  echo "== $$suite"; \
	  $(PY) -m pytest -q -ra $(1) $(PYTEST_ARGS) $$suite; rc=$$?; \
	  if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then status=$$rc; fi; \
	done; exit $$status
endef

test: setup system-deps
	$(call run_suites,)

## The same suites without the tests marked slow.
test-fast: setup
	$(call run_suites,-m "not slow")

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: setup
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: setup
	$(PY) benchmarks/core.py

## Remove what setup, the tests and the demo made: the venv, the random-weight test
## checkpoints (.cache/), the tests' JavaScript packages and the sample photos.
clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .cache tests/e2e/node_modules examples/photos
