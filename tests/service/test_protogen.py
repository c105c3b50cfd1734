"""The committed gRPC stubs are current, and the staleness check really detects changes."""

from __future__ import annotations

import subprocess
import sys

from llmco2_sidecar.service import protogen


def test_committed_stubs_are_current():
    proc = subprocess.run([sys.executable, "-m", "llmco2_sidecar.service.protogen", "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_check_detects_a_changed_proto(tmp_path, monkeypatch):
    # a copy of the protos with one more field: the committed stubs are stale for it
    src = tmp_path / "protos" / "llmco2" / "v1"
    src.mkdir(parents=True)
    for p in protogen.proto_files():
        (src / p.name).write_text(p.read_text())
    events = src / "events.proto"
    events.write_text(events.read_text().replace("  uint32 flagged = 9;", "  uint32 flagged = 9;\n  uint32 extra = 99;"))
    monkeypatch.setattr(protogen, "PROTO_ROOT", tmp_path / "protos")
    monkeypatch.setattr(protogen, "PROTO_DIR", src)
    assert protogen.MANIFEST in protogen.stale_files()


def test_check_detects_a_hand_edited_stub(tmp_path, monkeypatch):
    out = tmp_path / "_proto"
    out.mkdir()
    for p in protogen.OUT_DIR.iterdir():
        if p.is_file():
            (out / p.name).write_text(p.read_text())
    monkeypatch.setattr(protogen, "OUT_DIR", out)
    assert protogen.stale_files() == []
    stub = out / "sidecar_pb2_grpc.py"
    stub.write_text(stub.read_text() + "\n# edited\n")
    assert "sidecar_pb2_grpc.py" in protogen.stale_files()


def test_generated_imports_are_package_relative():
    text = (protogen.OUT_DIR / "sidecar_pb2_grpc.py").read_text()
    assert "from llmco2.v1 import" not in text and "from . import events_pb2" in text
