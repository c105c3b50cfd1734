"""Measurement devices for ``benchmarks/grpc_floor.py`` (never part of the product): put this folder on
a sidecar's PYTHONPATH and set ``LLMCO2_BENCH_PIPELINE``:

* ``drop``: the pipeline drops every message it is handed, counted as done. What is left is the
  sidecar's receive side alone: gRPC, the journal, ingest's validation and the Acks. No prediction,
  attribution, records or sinks run.
* ``inline``: no pipeline thread hand-off. The event loop's thread keeps steps-only messages and, when
  a message with a finish (or a static batch) comes, processes them all with it at once, as the
  pipeline thread's micro-batch would: the same work, on one thread. It answers whether the thread
  hand-offs cost much (they do not: see grpc_floor.md). Fine for a one-engine benchmark only (no
  step-wait timer: steps alone wait for the next finish).
"""

import os

_MODE = os.environ.get("LLMCO2_BENCH_PIPELINE", "")
if _MODE in ("drop", "inline"):
    from llmco2_sidecar.service import pipeline as _pipeline

    def _drop(self, item) -> None:
        self.submitted += 1
        self.done_messages += 1

    _held: list = []

    def _inline(self, item) -> None:
        self.submitted += 1
        self.submitted_steps += item.steps.n_steps if item.steps is not None else 0
        _held.append(item)
        if item.done or item.batches:
            items = list(_held)
            _held.clear()
            self._process(items)
            self.done_steps += sum(it.steps.n_steps for it in items if it.steps is not None)
            self.done_messages += len(items)

    _pipeline.Pipeline.submit = _drop if _MODE == "drop" else _inline
