"""``llmco2``: the command line. Each subcommand lives in its own module ``llmco2_sidecar.cli.<name>``
exposing ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when used, so
``llmco2 estimate`` never pays for gRPC or the profiler."""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import InputError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "estimate": ("estimate", "energy and carbon of a batch of requests (the paper's unit)"),
    "graph": ("graph", "print the per-layer kernel graph with Roofline figures"),
    "serve": ("serve", "run the sidecar: gRPC ingest of engine steps, per-request carbon, logs, metrics"),
    "tail": ("tail", "follow the carbon log as a live table"),
    "demo": ("demo", "replay the Azure conversation trace through the sidecar and summarise"),
    "replay": ("replay", "a request trace through a simulated engine: energy, carbon, latency of one configuration"),
    "whatif": ("whatif", "replay a trace on many configurations; the carbon-minimal one meeting latency SLOs"),
    "measure": ("measure", "read the NVML and RAPL energy meters over a few seconds"),
    "profile": ("profile", "measure per-batch GPU energy on a real GPU (training data harness)"),
    "train": ("train", "train the 2-GNN predictor from measurements and write a model file"),
    "doctor": ("doctor", "check the install: vLLM and the plugin, NVML, RAPL, the sidecar, the grid source"),
    "catalog": ("catalog", "list the bundled GPUs, servers, models and carbon-intensity regions"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmco2",
        description="Per-request carbon accounting for LLM serving (LLMCO2 kernel-graph predictor + sidecar).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        if only == name:  # import only the command being run: `llmco2 --help` stays instant
            mod = importlib.import_module(f"{__package__}.{module}")
            mod.add_arguments(p)
            p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except InputError as exc:
        print(f"llmco2 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
