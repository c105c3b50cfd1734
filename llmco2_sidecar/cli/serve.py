"""``llmco2 serve``: run the sidecar (gRPC ingest of engine steps, per-request carbon, logs, metrics).

Settings come from flags > ``LLMCO2_*`` environment > ``--config`` TOML file > defaults (every
setting is listed below). The sidecar listens on 127.0.0.1:50551 by default (``--unix PATH`` for a
Unix socket); it prints one line ``llmco2 sidecar listening on ADDRESS`` when ready. SIGINT or
SIGTERM stop it gracefully (pending records are written first).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .. import config as cfgmod


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = __doc__.split("\n\n", 1)[1].strip() if parser.description is None else (
        parser.description + " " + __doc__.split("\n\n", 1)[1].strip())
    cfgmod.add_arguments(parser)
    parser.add_argument("--log-level", default="INFO", help="logging level of the sidecar's own messages")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = cfgmod.resolve(args)
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
            extra = f"; metrics on http://{config.host}:{listening.metrics_port}/metrics" if listening.metrics_port else ""
            replay = f"; replayed {core.replayed_messages} journal messages" if core.replayed_messages else ""
            print(f"llmco2 sidecar listening on {listening.address} (log {config.log}; predictor "
                  f"{core.predictor.name}{extra}{replay})", flush=True)

        await serve_forever(config, ready, stop)

    asyncio.run(main())
    return 0


if __name__ == "__main__":  # pragma: no cover
    from .main import main as _main

    sys.exit(_main(["serve", *sys.argv[1:]]))
