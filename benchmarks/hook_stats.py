"""The statistics of benchmarks/hook_overhead.py: response-wait summaries, the sidecar's Prometheus
latency histograms (read, differenced, quantiles), quartiles, and the per-pass throughput ratios with
their 95% t-intervals (plain, and with the servers' start order taken out)."""

from __future__ import annotations

import math
import statistics

def _wait_summary(waits: list[float]) -> dict | None:
    """p50 / p90 / p99 / mean of the responses' ``x-llmco2-wait-ms`` (None when there were none)."""
    if not waits:
        return None
    w = sorted(waits)
    return {"n": len(w), "p50": statistics.median(w), "p90": w[int(0.9 * (len(w) - 1))],
            "p99": w[int(0.99 * (len(w) - 1))], "mean": statistics.fmean(w)}


HISTOGRAMS = {"record": "llmco2_record_latency_seconds", "finish_lag": "llmco2_finish_lag_seconds",
              "loop_lag": "llmco2_event_loop_lag_seconds"}


def _histograms(metrics_port: int) -> dict:
    """The sidecar's latency histograms as cumulative counts per bucket bound, from its Prometheus
    endpoint: ``record`` (a message's arrival to its request records), ``finish_lag`` (a request's
    finish in the engine to the finish event's arrival at the sidecar) and ``loop_lag`` (how late the
    sidecar's event loop wakes from its heartbeat's sleep: 0.25 s, four samples a second; 0.1 s before
    the 4 Hz heartbeat, as in the committed hook_overhead run)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    out: dict[str, dict] = {k: {} for k in HISTOGRAMS}
    for line in text.splitlines():
        for key, name in HISTOGRAMS.items():
            if line.startswith(name + "_bucket{"):
                bound = line.split('le="', 1)[1].split('"', 1)[0]
                out[key][bound] = float(line.rsplit(" ", 1)[1])
    return out


def _add_delta(acc: dict, before: dict, after: dict) -> None:
    """``acc`` += the observations between two reads of :func:`_histograms`."""
    for key in HISTOGRAMS:
        for bound, count in after[key].items():
            acc.setdefault(key, {})[bound] = acc.get(key, {}).get(bound, 0.0) + count - before[key].get(bound, 0.0)


def _late_share(hist: dict, bound: str = "0.05") -> dict:
    """Share of the samples in ``hist`` above ``bound`` seconds, and how many samples there were."""
    total = hist.get("+Inf", 0.0)
    return {"samples": int(total), "share_over_50ms": (total - hist.get(bound, 0.0)) / total if total else None}


def _quantiles_of(hist: dict) -> dict:
    return {f"p{int(q * 100)}": _bucket_quantile(hist, q) for q in (0.5, 0.9, 0.99)} if hist else {}


def _bucket_quantile(hist: dict, q: float) -> str | None:
    """Upper bucket bound holding quantile ``q`` of a histogram's observations (cumulative counts per
    bound, as Prometheus writes them); past the last finite bound, "> that bound"."""
    rows = sorted((float("inf") if b == "+Inf" else float(b), count) for b, count in hist.items())
    total = rows[-1][1] if rows else 0.0
    if total <= 0:
        return None
    finite = [b for b, _ in rows if b != float("inf")]
    for bound, count in rows:
        if count >= q * total:
            return f"> {finite[-1] * 1000:g} ms" if bound == float("inf") else f"<= {bound * 1000:g} ms"
    return None


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (float("nan"), float("nan"))
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


_T95 = dict(enumerate([12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
                        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                        2.052, 2.048, 2.045, 2.042], start=1))


def _t95(dof: int) -> float:
    """Two-sided 95% Student t quantile (exact to 30 degrees of freedom; beyond, the next lower row
    of the usual table's value: slightly wide, never narrow)."""
    if dof in _T95:
        return _T95[dof]
    return 2.042 if dof <= 60 else 2.000 if dof <= 120 else 1.980


def _mean_ci95(values: list[float]) -> list[float]:
    """[mean, lower, upper]: the mean with its two-sided 95% Student t-interval (at least two values)."""
    m = statistics.fmean(values)
    half = _t95(len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return [m, m - half, m + half]


def _order_adjusted(ratios: list[float], off_first: list[bool]) -> dict | None:
    """The per-pass ratios with the start order as a known factor of the design (the arms' order is
    reversed from one pass to the next): ``log r = mu + delta * s + e``, ``s`` = +1 in the passes where the
    switch-off server came first, -1 otherwise. ``exp(mu)`` is the ratio with the order's effect
    removed, with its 95% t-interval (residual variance pooled over both orders, n - 2 degrees of
    freedom); ``order_factor`` = ``exp(delta)``, what coming second did to the switch-on server's
    ratio. None unless each order has at least two passes."""
    a = [math.log(r) for r, f in zip(ratios, off_first) if f]
    b = [math.log(r) for r, f in zip(ratios, off_first) if not f]
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    dof = len(a) + len(b) - 2
    s2 = (sum((x - ma) ** 2 for x in a) + sum((x - mb) ** 2 for x in b)) / dof
    mu, half = (ma + mb) / 2, _t95(dof) * math.sqrt(s2 / 4 * (1 / len(a) + 1 / len(b)))
    return {"ratio": math.exp(mu), "ci95": [math.exp(mu - half), math.exp(mu + half)],
            "order_factor": math.exp((ma - mb) / 2), "passes": len(a) + len(b), "dof": dof}
