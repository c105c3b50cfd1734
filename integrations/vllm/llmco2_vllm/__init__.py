"""llmco2 plugin for vLLM: per-step events from the scheduler to the llmco2 sidecar, carbon in responses.

Turned on by one environment variable, ``LLMCO2_SIDECAR`` (see :mod:`llmco2_vllm.plugin`).
Importing this package imports nothing heavy (no grpc, no vllm).
"""
