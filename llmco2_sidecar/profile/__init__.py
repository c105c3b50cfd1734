"""The GPU profiling harness behind ``llmco2 profile`` (and ``python -m llmco2_sidecar.profile``).

``plan`` (pure Python) sizes a sweep of (model, layers, batch, prompt, output) points to a time
budget; ``hf_model`` builds random-weight transformers models from the catalog's specs; ``runner``
measures prefill and decode energy with the NVML counter and writes the CSV described in
data/measurements/README.md. Only torch, transformers and nvidia-ml-py are needed to run it.
"""
