"""``llmco2 serve``: run the sidecar (gRPC ingest of engine steps, per-request carbon, logs, metrics).

Settings come from flags > ``LLMCO2_*`` environment > ``--config`` TOML file > defaults (every
setting is listed below). The sidecar listens on 127.0.0.1:50551 by default (``--unix PATH`` for a
Unix socket); it prints one line ``llmco2 sidecar listening on ADDRESS`` when ready. SIGINT or
SIGTERM stop it gracefully (pending records are written first).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sys

from .. import config as cfgmod


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1].strip() if parser.description is None else (
        parser.description + " " + __doc__.split("\n\n", 1)[1].strip())
    cfgmod.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level of the sidecar's own messages")


def _pin_intra_op_threads(n: int) -> None:
    """Give the OpenMP/MKL runtimes the predictor's thread count before torch is imported.

    Seen on the 2-core CI machine beside a busy vLLM (the setting of benchmarks/hook_overhead.py;
    py-spy put the pipeline thread inside the GNN's linear layers): with the default team (one
    thread per core) and ``torch.set_num_threads(1)`` only after the import, each micro-batch's GNN
    call waited for OpenMP workers, and every response held for its carbon waited with it;
    ``OMP_NUM_THREADS=1`` (or ``KMP_BLOCKTIME=0``) before the import removed the wait
    (tests/cli/test_cli_serve.py checks that no extra workers are started).
    The sidecar's own setting wins over an inherited ``OMP_NUM_THREADS`` (often the engine's value).
    """
    if "torch" in sys.modules:  # too late for the environment; the server still calls set_num_threads
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(int(n))


# gRPC's EventEngine I/O (its default in grpcio 1.6x-1.8x) reads and writes on a pool of its own
# threads, and every message hops pool thread -> completion-queue poller -> event loop; with the
# older iomgr stack the poller thread does the I/O itself. An early paced run of the sidecar measured
# about 150 us less CPU per message with it; the committed benchmarks/grpc_floor.py runs of a bare
# grpc.aio servicer do not show a consistent difference on this VM (390 / 490 us on iomgr against 430
# / 420 on EventEngine, two runs). Kept as the stack the sidecar is tested and measured on; an
# operator's own GRPC_EXPERIMENTS wins.
GRPC_IO_EXPERIMENTS = ("-event_engine_listener,-event_engine_for_all_other_endpoints,-event_engine_callback_cq,"
                       "-event_engine_client")


GRPC_IO_VERSIONS = ((1, 60), (1, 90))  # grpcio versions that know these experiment names (measured: 1.85)


def _grpc_io_stack(version: str | None = None) -> None:
    """Choose gRPC's I/O stack before gRPC starts (see GRPC_IO_EXPERIMENTS). Outside
    GRPC_IO_VERSIONS nothing is set (a grpcio that no longer knows the names would log each one as
    unknown at start)."""
    if version is None:
        import grpc

        version = grpc.__version__
    try:
        major_minor = tuple(int(x) for x in version.split(".")[:2])
    except ValueError:
        return
    if GRPC_IO_VERSIONS[0] <= major_minor < GRPC_IO_VERSIONS[1]:
        os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_IO_EXPERIMENTS)


def _freeze_startup_objects() -> None:
    """Exempt what exists once the sidecar listens (the predictor, torch, gRPC, the catalogs: about
    360,000 objects with the GNN) from the garbage collector's full collections: each full
    collection scanned them all, with the whole process paused (200-230 ms each on this machine,
    measured during the start; none came in a benchmarks/sidecar.py run after it, but a sidecar
    that runs for days meets them). Objects made later are collected as before."""
    gc.collect()
    gc.freeze()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = cfgmod.resolve(args)
    _pin_intra_op_threads(config.predictor_threads)
    _grpc_io_stack()
    from ..service.server import serve_forever

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # pragma: no cover
                pass

        def ready(listening, core) -> None:
            _freeze_startup_objects()
            extra = f"; metrics on http://{config.host}:{listening.metrics_port}/metrics" if listening.metrics_port else ""
            replay = f"; replayed {core.replayed_messages} journal messages" if core.replayed_messages else ""
            moe = getattr(core.predictor, "moe", None)
            pred = core.predictor.name + (f", {moe.name} for mixtures of experts"
                                          if moe is not None and moe is not getattr(core.predictor, "dense", None) else "")
            print(f"llmco2 sidecar listening on {listening.address} (log {config.log}; predictor "
                  f"{pred}{extra}{replay})", flush=True)

        await serve_forever(config, ready, stop)

    asyncio.run(main())
    return 0


if __name__ == "__main__":  # pragma: no cover
    from .main import main as _main

    sys.exit(_main(["serve", *sys.argv[1:]]))
