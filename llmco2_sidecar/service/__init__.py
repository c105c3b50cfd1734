"""The sidecar service: engine steps in over gRPC, per-request carbon out.

Modules, one job each:

* :mod:`.ingest`: validation of the engine stream (identity, columnar steps, done events, static
  batches) into accepted numpy columns, and the Ack with rejections naming their field;
* :mod:`.journal`: the write-ahead journal (acknowledged = journaled), checkpoints, replay;
  :mod:`.recovery` replays it at start and checkpoints at each roll; :mod:`.disk_worker` runs
  the fsyncs and checkpoint writes off the event loop and the pipeline;
* :mod:`.pipeline`: the thread that micro-batches steps, calls the predictor once per engine per
  micro-batch, attributes energy (:mod:`.attribution`), keeps the ledger (:mod:`.ledger`) and writes
  the sinks (:mod:`.carbon_log`, :mod:`.metrics`), with measured windows when meters are on;
* :mod:`.server`: the ``grpc.aio`` server (``llmco2.v1.CarbonSidecar``, health, reflection,
  bearer-token interceptor, TLS) and :class:`~.server.SidecarThread` for in-process use;
* :mod:`.protogen`: regenerates ``llmco2_sidecar/_proto`` from ``protos/`` (``make protos``).
"""
