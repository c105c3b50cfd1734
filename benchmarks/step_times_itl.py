"""Part 4 of ``benchmarks/step_times.py``: ML.ENERGY v3's published inter-token latency quantiles against
the duration model's steps and the training windows' (see that script's docstring)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from llmco2_sidecar.graph.step_time import step_time_split
from llmco2_sidecar.predictor.prior import DurationModel
from llmco2_sidecar.workload import StepBatch


def itl_table(data_dir: Path) -> dict[tuple, tuple]:
    """``{(model, task, gpu, gpus, max_num_seqs): (p50, p90, p99 ITL in s)}`` from the bundled v3 files."""
    out = {}
    for f in sorted((data_dir / "models").glob("*.json")):
        doc = json.loads(f.read_text())
        for c in doc.get("configurations", []):
            q = [c.get(k) for k in ("median_itl_ms", "p90_itl_ms", "p99_itl_ms")]
            if all(x is not None for x in q):
                out[(doc["model_id"], doc["task"], c["gpu_model"], int(c["num_gpus"]), int(c["max_num_seqs"]))] = \
                    tuple(x / 1e3 for x in q)
    return out


def weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    order = np.argsort(x)
    cum = np.cumsum(w[order]) / w.sum()
    return float(x[order][min(int(np.searchsorted(cum, q)), len(x) - 1)])


QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


def _rows_with_itl(feats, examples, data_dir: Path):
    """``(featurized, example, (p50, p90, p99) s, decode-request weight per step)`` of every dense v3 row with
    published ITL quantiles."""
    table = itl_table(data_dir)
    for fe, e in zip(feats, examples):
        if e.meta.get("moe") or not e.source.endswith("v3"):
            continue
        _, model_id, task, gpus, _, seqs = e.key.split("|")
        gpu, n = gpus.split("x")
        obs = table.get((model_id, task, gpu, int(n), int(seqs[4:])))
        if obs is not None:
            st = e.steps
            w = e.weight * np.bincount(st.request_step, weights=(st.new_tokens == 1).astype(float), minlength=st.n_steps)
            yield fe, e, obs, w


def itl_part(feats, examples, models: dict[str, DurationModel], data_dir: Path) -> dict:
    """Part 4: each dense v3 row's published ITL quantiles against the duration models' and the training
    window's step-time quantiles (decode-request weighted)."""
    errs = defaultdict(list)
    for fe, e, obs, w in _rows_with_itl(feats, examples, data_dir):
        st = e.steps
        cands = {b: m.predict_steps_s(e.deployment, st) for b, m in models.items()}
        cands["training window"] = fe.duration_s
        for name, t in cands.items():
            errs[name].append([weighted_quantile(t, w, q) / o - 1 for (_, q), o in zip(QUANTILES, obs)])
    out = {"n": len(next(iter(errs.values()))) if errs else 0, "rows": {}}
    for name, v in errs.items():
        v = np.array(v)
        out["rows"][name] = {label: {"mape": float(np.mean(np.abs(v[:, k])) * 100), "bias": float(np.median(v[:, k]) * 100)}
                             for k, (label, _) in enumerate(QUANTILES)}
    return out


#: compute-bound efficiencies part 4's grid tries (1.0: no stretch, the old base's kernels)
GRID_EFFICIENCIES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5)


def itl_grid(feats, examples, data_dir: Path, effs=GRID_EFFICIENCIES) -> list[dict]:
    """Part 4's second table: one compute-bound efficiency ``e`` for every GPU, the overheads refitted on the
    mean step times of the other architectures (leave-one-architecture-out), scored on each held-out row's
    published ITL quantiles and mean: what these token gaps would choose if the efficiency were fitted to them."""
    from scipy.optimize import nnls

    rows = []
    for fe, e, obs, w in _rows_with_itl(feats, examples, data_dir):
        roof, comp, nreq = step_time_split(e.deployment, e.steps)
        rows.append({"model": e.model, "roof": roof, "comp": comp, "n": nreq, "p": e.weight / e.weight.sum(), "w": w,
                     "mean": float(e.weight @ fe.duration_s / e.weight.sum()), "obs": obs})

    def fit(rs, stretch):
        a = np.array([[r["p"] @ (r["roof"] + r["comp"] * stretch), 1.0, r["p"] @ r["n"]] for r in rs])
        y = np.array([r["mean"] for r in rs])
        m, rhs = a / y[:, None], 1.0 - a[:, 0] / y
        scale = np.maximum(np.abs(m).max(axis=0), 1e-300)
        return nnls(m / scale, rhs)[0] / scale

    out = []
    for eff in effs:
        stretch, errs = 1.0 / eff - 1.0, []
        for held in sorted({r["model"] for r in rows}):
            c = fit([r for r in rows if r["model"] != held], stretch)
            for r in (r for r in rows if r["model"] == held):
                t = (r["roof"] + r["comp"] * stretch) * (1.0 + c[0]) + c[1] + c[2] * r["n"]
                errs.append([weighted_quantile(t, r["w"], q) / o - 1 for (_, q), o in zip(QUANTILES, r["obs"])]
                            + [float(r["p"] @ t) / r["mean"] - 1])
        v = np.array(errs)
        out.append({"efficiency": eff, **{label: {"mape": float(np.mean(np.abs(v[:, k])) * 100),
                                                   "bias": float(np.median(v[:, k]) * 100)}
                                           for k, label in enumerate([q for q, _ in QUANTILES] + ["mean"])}})
    return out


def own_part(folder: Path, models: dict[str, DurationModel]) -> dict:
    """Part 5: the project's own measured batches (``llmco2 profile`` on a lent GPU, ``data/measurements/*.csv``):
    each batch's measured prefill time (one forward over batch x prompt tokens) and mean decode step time
    against the duration models (their base alone, the kernels' time, and with the fitted overheads). HF
    transformers eager, not vLLM: its decode steps carry per-layer Python overhead that no fit here has, its
    prefill is kernel time. Empty until a session with a GPU has run the harness."""
    from llmco2_sidecar.errors import InputError
    from llmco2_sidecar.predictor.dataset import measured_examples
    from llmco2_sidecar.predictor.measurements import read_measurements

    try:
        batches = read_measurements(folder) if Path(folder).is_dir() else []
    except InputError as exc:
        return {"n": 0, "error": str(exc), "rows": {}}
    examples, _ = measured_examples(batches)
    errs = defaultdict(list)
    for e in examples:
        observed = float(e.weight @ e.steps.duration_s / e.weight.sum())
        steps = StepBatch(e.steps.request_step, e.steps.context_tokens, e.steps.new_tokens,
                          np.full(e.steps.n_steps, np.nan))  # as replay sees them: no observed duration
        for name, m in models.items():
            base, _ = m.base_s(e.deployment, steps)
            full = m.predict_steps_s(e.deployment, steps)
            for label, t in ((f"{name}, kernels alone", base), (f"{name}, with overheads", full)):
                phase = "prefill" if e.head == "prefill" else "decode"  # a measured decode trains the total head
                errs[(phase, e.gpu, label)].append(float(e.weight @ t / e.weight.sum()) / observed - 1)
    rows = {}
    for (head, gpu, label), v in sorted(errs.items()):
        v = np.array(v)
        rows.setdefault(f"{head}|{gpu}", {})[label] = {"n": int(v.size), "mape": float(np.mean(np.abs(v)) * 100),
                                                        "bias": float(np.median(v) * 100)}
    return {"n": len(batches), "rows": rows}
