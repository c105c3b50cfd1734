"""``python -m llmco2_sidecar.profile [options]``: the harness without the ``llmco2`` console script."""

from __future__ import annotations

import argparse
import sys

from ..cli import profile as cli_profile
from ..errors import InputError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmco2_sidecar.profile",
                                     description="Measure per-batch GPU energy (prefill and decode) into a CSV.")
    cli_profile.add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cli_profile.run(args)
    except InputError as exc:
        print(f"llmco2 profile: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
