"""Shared test setup. Tests run with --import-mode=importlib, so this folder is put on sys.path to
make the shared kit (sidecar_testkit) importable from every test folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture
def sidecar(tmp_path):
    """A real grpc.aio sidecar on loopback, in a background thread (Roofline predictor)."""
    from sidecar_testkit import make_config

    from llmco2_sidecar.service.server import SidecarThread

    sc = SidecarThread(make_config(tmp_path)).start()
    yield sc
    sc.stop()


@pytest.fixture
def stub(sidecar):
    import grpc

    from llmco2_sidecar._proto import sidecar_pb2_grpc

    channel = grpc.insecure_channel(sidecar.address)
    yield sidecar_pb2_grpc.CarbonSidecarStub(channel)
    channel.close()


@pytest.fixture
def pynvml_without_driver():
    """The real nvidia-ml-py on a machine without the NVIDIA driver (this one): skips where NVML works."""
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return pynvml
    pynvml.nvmlShutdown()  # pragma: no cover - a machine with a GPU
    pytest.skip("a real NVIDIA driver is present")  # pragma: no cover
