"""Fixtures: a real grpc.aio sidecar on loopback, in a background thread."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make the kit importable
from sidecar_testkit import make_config  # noqa: E402

from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.service.server import SidecarThread


@pytest.fixture
def sidecar(tmp_path):
    sc = SidecarThread(make_config(tmp_path)).start()
    yield sc
    sc.stop()


@pytest.fixture
def stub(sidecar):
    channel = grpc.insecure_channel(sidecar.address)
    yield sidecar_pb2_grpc.CarbonSidecarStub(channel)
    channel.close()
