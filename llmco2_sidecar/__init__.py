"""llmco2-sidecar: per-request carbon accounting for LLM serving.

The package is split by concern (see README): ``hardware`` (GPU and server specs), ``models``
(LLM architectures from Hugging Face ``config.json``), ``graph`` (the per-layer kernel graph with
Roofline features), ``predictor`` (step and batch energy predictors), ``energy`` (serving-engine
energy, carbon intensity, embodied carbon), ``measure`` (NVML and RAPL meters), ``service`` (the
gRPC sidecar and its sinks) and ``cli``.
"""

__version__ = "0.1.0"
