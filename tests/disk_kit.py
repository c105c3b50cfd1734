"""Shared by the disk-trouble tests: an engine's requests through the real emitter, health checks
over real gRPC, and the file-layer fault injection (``os`` as the journal and the log see it)."""

from __future__ import annotations

import errno
import os
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sidecar_testkit import GPU, MODEL

from llmco2_sidecar.client.emitter import Emitter, EmitterConfig, EngineInfo

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


class Requests:
    """An engine's requests through the real emitter: each a prefill step, a decode step, a finish."""

    def __init__(self, address: str):
        self.em = Emitter(EngineInfo(engine_name="test", model_name=MODEL, gpu=GPU, instance_id="disk-engine"),
                          EmitterConfig(target=address, backoff_max_s=0.3, min_send_interval_s=0.0))
        self.n = 0
        self.ids: list[str] = []

    def run(self, count: int) -> None:
        for _ in range(count):
            rid, s, t = f"r{self.n}", 2 * self.n + 1, 0.05 * self.n
            self.em.emit_step(s, t, t + 0.02, [rid], [64], [0], [64])
            self.em.emit_step(s + 1, t + 0.03, t + 0.04, [rid], [1], [64], [64])
            self.em.emit_done(rid, 2)
            self.ids.append(rid)
            self.n += 1


def _health(address: str) -> int:
    with grpc.insecure_channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="llmco2.v1.CarbonSidecar"), timeout=5).status


def _wait_health(address: str, status: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _health(address) != status:
        assert time.monotonic() < deadline, f"health did not become {status}"
        time.sleep(0.05)


class FaultyOs:
    """``os`` as the journal and the carbon log see it, with the kernel's errors on demand for files
    under ``root``: ``write``/``fsync`` fail with ENOSPC, or ``open`` (of a new file) with EACCES."""

    def __init__(self, root: str):
        self.root = root
        self.fail: set[str] = set()

    def __getattr__(self, name):
        return getattr(os, name)

    def _ours(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/self/fd/{fd}").startswith(self.root)
        except OSError:
            return False

    def write(self, fd, data):
        if "write" in self.fail and self._ours(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.write(fd, data)

    def writev(self, fd, buffers):
        if "write" in self.fail and self._ours(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.writev(fd, buffers)

    def fsync(self, fd):
        if "fsync" in self.fail and self._ours(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.fsync(fd)

    def open(self, path, flags, mode=0o777):
        if "open" in self.fail and str(path).startswith(self.root):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return os.open(path, flags, mode)
