"""Generated gRPC stubs for llmco2.v1 (``make protos``; do not edit)."""
