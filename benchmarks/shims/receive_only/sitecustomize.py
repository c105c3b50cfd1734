"""A measurement device for ``benchmarks/grpc_floor.py`` (never part of the product): put this folder on
a sidecar's PYTHONPATH with ``LLMCO2_BENCH_RECEIVE_ONLY=1`` and its pipeline drops every message it is
handed, counted as done. What is left is the sidecar's receive side alone: gRPC, the journal, ingest's
validation and the Acks. No prediction, attribution, records or sinks run."""

import os

if os.environ.get("LLMCO2_BENCH_RECEIVE_ONLY") == "1":
    from llmco2_sidecar.service import pipeline as _pipeline

    def _drop(self, item) -> None:
        self.submitted += 1
        self.done_messages += 1

    _pipeline.Pipeline.submit = _drop
