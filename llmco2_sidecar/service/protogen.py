"""Generate the gRPC stubs in ``llmco2_sidecar/_proto/`` from ``protos/llmco2/v1/*.proto``.

``python -m llmco2_sidecar.service.protogen`` regenerates them (``make protos``);
``--check`` exits 1 when the committed stubs are stale, 0 when they are current.

The generated imports (``from llmco2.v1 import events_pb2``) are rewritten to package-relative
ones so that the stubs work inside ``llmco2_sidecar._proto``. Staleness is judged two ways:
``SOURCES.sha256`` records a hash of the ``.proto`` files the stubs came from (checked always),
and when the installed grpcio-tools is the version that generated them, the regenerated files
must match byte for byte (which also catches hand edits).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTO_ROOT = REPO / "protos"
PROTO_DIR = PROTO_ROOT / "llmco2" / "v1"
OUT_DIR = REPO / "llmco2_sidecar" / "_proto"
MANIFEST = "SOURCES.sha256"
_IMPORT_RE = re.compile(r"^from llmco2\.v1 import (\w+_pb2)", re.MULTILINE)


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.glob("*.proto"))


def sources_hash() -> str:
    h = hashlib.sha256()
    for path in proto_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def tools_version() -> str:
    try:
        from importlib.metadata import version

        return version("grpcio-tools")
    except Exception:  # pragma: no cover - tools missing
        return "unknown"


def generate() -> dict[str, str]:
    """Run protoc; return {file name: text} of the rewritten stubs plus the manifest."""
    from grpc_tools import protoc
    import grpc_tools

    include = str(Path(grpc_tools.__file__).parent / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise RuntimeError(f"protoc failed with status {rc}")
        out: dict[str, str] = {}
        for path in sorted((Path(tmp) / "llmco2" / "v1").iterdir()):
            if path.suffix not in (".py", ".pyi"):
                continue
            out[path.name] = _IMPORT_RE.sub(r"from . import \1", path.read_text())
    out["__init__.py"] = '"""Generated gRPC stubs for llmco2.v1 (``make protos``; do not edit)."""\n'
    out[MANIFEST] = f"{sources_hash()}  protos/llmco2/v1/*.proto\ngrpcio-tools {tools_version()}\n"
    return out


def stale_files() -> list[str]:
    """Names of stub files that differ from what the current protos would generate."""
    manifest = OUT_DIR / MANIFEST
    if not manifest.exists():
        return [MANIFEST]
    lines = manifest.read_text().splitlines()
    problems = []
    if not lines or lines[0].split()[0] != sources_hash():
        problems.append(MANIFEST)
    generated_with = lines[1].split()[-1] if len(lines) > 1 else ""
    if generated_with == tools_version():
        for name, text in generate().items():
            if name == MANIFEST:
                continue
            path = OUT_DIR / name
            if not path.exists() or path.read_text() != text:
                problems.append(name)
    return problems


def write() -> list[str]:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    files = generate()
    for old in OUT_DIR.iterdir():
        if old.is_file() and old.name not in files and old.suffix in (".py", ".pyi"):
            old.unlink()
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed stubs are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print("stale gRPC stubs: " + ", ".join(stale) + " (run `make protos`)", file=sys.stderr)
            return 1
        print("gRPC stubs are current")
        return 0
    names = write()
    print(f"wrote {len(names)} files to {OUT_DIR.relative_to(REPO)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
