"""Carbon settings per engine and the construction of every request record (one place).

Plain functions, importable without a server: the pipeline, the running lookups, the identity check
and trace replay (``llmco2 replay``) all build their records here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..energy.sci import request_sci


@dataclass
class Accounting:
    """Carbon settings resolved for one engine."""

    pue: float
    ci_g_per_kwh: float
    region: str
    idle_power_w: float
    host_busy_w: float
    formation_j: float
    embodied_g_per_gpu_s: float
    n_gpus: int
    grid: Any = None  # an energy.grid GridSource: the intensity at a time, from memory (never blocks)
    #: the predictor's typical error on this deployment, in % (predictor/heldout.py); None: unknown
    expected_error_pct: float | None = None
    #: the model that predicts this engine's steps (a routed predictor's member: predictor/routed.py)
    predictor_name: str = ""

    def intensity(self, unix_s: float | None = None):
        """The grid reading (g_per_kwh, kind, source, ts) for energy at ``unix_s``."""
        if self.grid is None:
            from ..energy.grid.series import IntensityReading

            return IntensityReading(self.ci_g_per_kwh, "location", self.region, 0.0)
        return self.grid.reading(unix_s)


def make_accounting(config, deployment, grid=None) -> Accounting:
    """Resolve the carbon settings of ``config`` (a :class:`~llmco2_sidecar.config.SidecarConfig`
    or anything with its fields) for an engine on ``deployment``. Raises :class:`InputError`.
    ``grid``: the :mod:`~llmco2_sidecar.energy.grid` source records read their intensity from
    (default: the configured figure, else the static region; no network)."""
    from ..energy import carbon, embodied, serving

    cfg = config
    n = deployment.n_gpus
    power = serving.serving_power(deployment.gpu, n, cfg.host_idle_w_per_gpu,
                                  serving.DEFAULT_FORMATION_J if cfg.formation_j is None else cfg.formation_j)
    pue = carbon.check_pue(carbon.DEFAULT_PUE if cfg.pue is None else cfg.pue)
    if cfg.carbon_intensity_g_per_kwh is not None:
        ci, region = carbon.check_carbon_intensity(cfg.carbon_intensity_g_per_kwh), "configured"
    else:
        reg = carbon.region(cfg.region)
        ci, region = reg.g_per_kwh, reg.code
    if grid is None:
        from ..energy.grid import sources

        grid = sources.GridSource(sources.configured_reading(ci) if region == "configured"
                                  else sources.static_reading(region))
    lifetime = embodied.DEFAULT_LIFETIME_YEARS if cfg.lifetime_years is None else cfg.lifetime_years
    return Accounting(pue=pue, ci_g_per_kwh=ci, region=region, idle_power_w=power.idle_w,
                      host_busy_w=power.host_idle_w, formation_j=power.formation_j,
                      embodied_g_per_gpu_s=float(embodied.embodied_carbon_g(deployment.gpu, 1.0, lifetime)), n_gpus=n,
                      grid=grid)


def with_predictor(acc: Accounting, predictor, deployment, model_id: str = "") -> Accounting:
    """``acc`` with the facts of the model of ``predictor`` that answers for ``deployment``: its name
    and its typical error there in % (predictor/heldout.py; None without held-out scores)."""
    from ..predictor.heldout import expected_error_for

    err = expected_error_for(predictor, deployment, model_id)
    acc.expected_error_pct = round(err.mape_pct, 2) if err is not None else None
    acc.predictor_name = predictor.name_for(deployment)
    return acc


def grid_fields(reading) -> dict:
    """The intensity a record used: figure, kind (location, marginal), source, unix time of the reading."""
    if reading is None:
        return {"carbon_intensity_g_per_kwh": 0.0, "carbon_intensity_kind": None, "carbon_intensity_source": None,
                "carbon_intensity_ts": None}
    return {"carbon_intensity_g_per_kwh": reading.g_per_kwh, "carbon_intensity_kind": reading.kind,
            "carbon_intensity_source": reading.source, "carbon_intensity_ts": reading.ts}


def request_record(stream, acc: Accounting | None, rid: str, ts: float, prompt: int, output: int,
                   prefill_j: float, decode_j: float, serving_j: float, gpu_s: float, steps: int, aborted: bool,
                   source: str = "predicted", predictor: str = "", error: str | None = None,
                   client_id: str = "") -> dict:
    """One request's record (the carbon log line, the lookup answer, the announcement).

    ``source`` is ``predicted``, ``measured`` or ``error``: an ``error`` record carries ``error`` (why
    its energy is incomplete: the failure that cost it steps) and the energy that could be accounted.
    ``client_id``: the id the client knows the request by (X-Request-Id), "" when unknown. The
    intensity is the grid source's reading for ``ts``; ``sci`` is the request's SCI (energy/sci.py).
    """
    total = prefill_j + decode_j + serving_j
    pue = acc.pue if acc is not None else 0.0
    grid = acc.intensity(ts) if acc is not None else None
    ci = grid.g_per_kwh if grid is not None else 0.0
    op = total * pue / 3.6e6 * ci
    emb = gpu_s * acc.embodied_g_per_gpu_s if acc is not None else 0.0
    rec = {"type": "request", "ts": ts, "request_id": rid, "client_request_id": client_id or None,
           "engine": stream.stream_id,
           "model": stream.model_label, "gpu": stream.gpu_label, "prompt_tokens": int(prompt),
           "output_tokens": int(output), "steps": int(steps), "aborted": bool(aborted),
           "energy_j": {"prefill": prefill_j, "decode": decode_j, "serving": serving_j, "total": total},
           "carbon_g": {"operational": op, "embodied": emb, "total": op + emb},
           "sci": request_sci(op + emb, int(prompt), int(output)),
           "gpu_s": gpu_s, "source": source,
           "predictor": (acc.predictor_name if acc is not None and acc.predictor_name else predictor),
           "pue": pue, **grid_fields(grid), "region": acc.region if acc is not None else "",
           "expected_error_pct": (acc.expected_error_pct if acc is not None and source == "predicted" and error is None
                                  else None)}
    if error is not None:
        rec["source"] = "error"
        rec["error"] = error
    return rec


def error_record(stream, acc: Accounting | None, rid: str, ts: float, error: str, prompt: int = 0, output: int = 0,
                 aborted: bool = False, predictor: str = "", client_id: str = "") -> dict:
    """The record of a request none of whose energy could be accounted (``source: "error"``)."""
    return request_record(stream, acc, rid, ts, prompt, output, 0.0, 0.0, 0.0, 0.0, 0, aborted,
                          predictor=predictor, error=error, client_id=client_id)
