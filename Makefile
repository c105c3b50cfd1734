# llmco2-sidecar: `make demo` runs the main job on an embedded default, `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast protos check-protos bench clean help vllm-env

help:
	@echo "make demo     - replay the Azure conversation trace through the sidecar (no GPU needed)"
	@echo "make test     - run the whole test suite (creates .venv on first use)"
	@echo "make protos   - regenerate the gRPC stubs from protos/"
	@echo "make bench    - run the benchmarks in benchmarks/ and write benchmarks/results/"

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first (a plain 'torch' would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/llmco2 demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not e2e"

protos: $(STAMP)
	$(BIN)/python -m llmco2_sidecar.service.protogen

check-protos: $(STAMP)
	$(BIN)/python -m llmco2_sidecar.service.protogen --check

bench: $(STAMP)
	$(BIN)/python benchmarks/sidecar.py
	$(BIN)/python benchmarks/accuracy.py

clean:
	rm -rf $(VENV) build *.egg-info
