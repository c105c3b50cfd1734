"""Serving-engine energy (paper section 4.2): E_serv = P_idle x t_form + E_form.

``t_form`` is the batch formation latency -- the idle gap the server spends waiting for work between
steps -- and ``E_form`` the host's dynamic energy of forming the batch. P_idle is the host's idle
power share for the GPUs the replica uses (DGX host idle / GPUs per node x GPUs used) plus the
GPUs' own idle power during the gap.

Defaults, stated: host idle power from the hardware catalog's DGX entry for the GPU
(ESTIMATED there: no DGX idle figure is published), else 60 W per GPU; E_form 0 J per step unless
configured (the paper measures it; we have no public measurement of it).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..hardware.catalog import load_catalog
from ..hardware.spec import GPUSpec

DEFAULT_HOST_IDLE_W_PER_GPU = 60.0
DEFAULT_FORMATION_J = 0.0


@dataclass(frozen=True)
class ServingPower:
    """Idle power the replica draws while the engine waits: host share plus the GPUs' idle."""

    host_idle_w: float
    gpu_idle_w: float
    formation_j: float = DEFAULT_FORMATION_J

    @property
    def idle_w(self) -> float:
        return self.host_idle_w + self.gpu_idle_w


def serving_power(gpu: GPUSpec, n_gpus: int, host_idle_w_per_gpu: float | None = None,
                  formation_j: float = DEFAULT_FORMATION_J) -> ServingPower:
    if host_idle_w_per_gpu is None:
        server = load_catalog().server_for_gpu(gpu.gpu_id)
        host_idle_w_per_gpu = server.host_idle_w / server.gpus_per_node if server else DEFAULT_HOST_IDLE_W_PER_GPU
    return ServingPower(host_idle_w_per_gpu * n_gpus, gpu.idle_w * n_gpus, formation_j)


def serving_energy_j(idle_s, host_idle_w: float, formation_j: float = DEFAULT_FORMATION_J):
    """E_serv = P_idle x t + E_form (scalars or arrays)."""
    return host_idle_w * idle_s + formation_j


def host_energy_j(busy_s, host_idle_w: float):
    """The host's share while the GPUs compute: the engine's own process keeps the host busy."""
    return host_idle_w * busy_s
