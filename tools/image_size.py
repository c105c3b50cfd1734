"""Estimate the sidecar image's Python payload from an environment that has this package installed
(no Docker daemon needed): the runtime dependency closure of ``llmco2-sidecar`` (no extras), each
distribution's installed files (bytecode included, as ``pip install`` leaves them), less what the
Dockerfile deletes (``torch/test``, ``torch/include``, static libraries).

    .venv/bin/python tools/image_size.py          # prints one line per distribution, then the total

The base image (python:3.12-slim) comes on top and is not counted.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

DELETED = ("torch/test/", "torch/include/")


def closure(root: str = "llmco2-sidecar") -> dict[str, metadata.Distribution]:
    seen: dict[str, metadata.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def installed_bytes(dist: metadata.Distribution) -> int:
    total = 0
    for f in dist.files or []:
        rel = str(f).replace("\\", "/")
        if rel.startswith(DELETED) or rel.endswith(".a"):
            continue
        try:
            total += os.path.getsize(dist.locate_file(f))
        except OSError:
            pass
    if not dist.files or total < 10_000:  # an editable install: count the package's own folder
        pkg = Path(__file__).resolve().parents[1] / "llmco2_sidecar"
        if dist.metadata["Name"].lower().replace("_", "-") == "llmco2-sidecar" and pkg.is_dir():
            total = sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return total


def main() -> int:
    dists = closure()
    if "llmco2-sidecar" not in dists:
        print("llmco2-sidecar is not installed in this environment", file=sys.stderr)
        return 2
    rows = sorted(((installed_bytes(d), k, d.version) for k, d in dists.items()), reverse=True)
    for size, name, version in rows:
        print(f"{size / 1e6:9.1f} MB  {name} {version}")
    total = sum(r[0] for r in rows)
    torch = next((r[0] for r in rows if r[1] == "torch"), 0)
    print(f"total {total / 1e6:.0f} MB in {len(rows)} distributions (torch {torch / 1e6:.0f} MB); "
          "base image not counted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
