"""Training examples: weighted sets of engine steps with one measured label each.

* An ML.ENERGY row -> its steady-state window (:mod:`.window`); label = J per output token;
  prediction = sum(weight * step energy) / running batch.
* A measured batch (:mod:`.measurements`) -> a prefill example (one step; label prefill_j, supervises
  both the prefill and the total head) and a decode example (sampled decode steps; label decode_j).

Features are computed once per example (:func:`featurize`) and packed by graph topology so that a
forward pass is one batched call per topology (:class:`Packed`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import InputError
from ..graph import GLOBAL_FEATURE_NAMES, StepFeatures, step_features
from ..graph.builder import duration_globals
from ..graph.step_time import step_roofline_s
from ..hardware.catalog import load_gpu
from ..models.catalog import load_model
from ..workload import Parallelism, StepBatch
from .api import Deployment
from .heldout import name_family
from .layers import mean_adjacency
from .measurements import MeasuredBatch
from .mlenergy import GPU_NAMES, MLEnergyRow, exclusion_reason
from .physics import power_bounds_j
from .prior import DurationModel, prior_terms
from .window import STEP_TIMES, spread_step_times, steady_window

SOURCE_MLENERGY = "mlenergy-v3"  # the newest engine (vLLM 0.11.1): the duration model's source
SOURCE_MEASURED = "measurements"


@dataclass
class Example:
    """One label and the weighted steps that explain it (prediction = weight @ E / denom)."""

    key: str
    source: str
    model: str
    family: str
    gpu: str
    deployment: Deployment
    steps: StepBatch
    weight: np.ndarray
    denom: float
    target: float
    head: str = "total"  # "total" or "prefill" (a prefill-only step supervises both heads)
    meta: dict = field(default_factory=dict)


#: Mixture-of-experts families (held out as groups of their own, never mixed with a dense family).
MOE_FAMILIES = ("qwen3-moe", "gpt-oss", "deepseek", "llama-4", "mixtral")


def row_deployment(row: MLEnergyRow) -> Deployment:
    """Deployment of an ML.ENERGY row. The published id is looked up first: the models catalog knows
    the number formats of the FP8 and MXFP4 checkpoints it bundles (models/precision.py); an FP8 id it
    does not know runs its base architecture with 8-bit weights and activations. Expert parallelism as
    published (v3 ``parallelization.expert_parallel``), else none."""
    try:
        model = load_model(row.model_id)
    except InputError:
        base = re.sub(r"-FP8$", "", row.model_id)
        model = load_model(base, weight_bits=8, act_bits=8) if row.weight_precision == "fp8" else load_model(base)
    if row.ep > 1:
        # v3 publishes MoE runs as tp 1, dp 1, ep = num_gpus. One server (the running batch and the
        # throughput are the whole server's: b / throughput = the median inter-token latency), so we
        # read it as vLLM's --enable-expert-parallel over TP = num_gpus (EP = TP): attention split
        # by TP, whole experts per GPU. An ASSUMPTION (DP attention would give the same GPU count).
        tp = max(row.tp * row.dp, row.num_gpus)
        par = Parallelism(tp=tp, ep=row.ep if row.ep <= tp else tp)
    else:
        par = Parallelism(tp=row.tp)
    return Deployment(model, load_gpu(GPU_NAMES[row.gpu]), par)


def architecture_of(model) -> str:
    """The architecture a checkpoint runs (fine-tunes, Instruct/Thinking releases and FP8 copies of one
    architecture are one group): the catalog's ``"<id> architecture; ..."`` provenance, else its name."""
    m = re.match(r"(\S+) architecture", getattr(model, "source", "") or "")
    return m.group(1) if m else model.name


def mlenergy_examples(rows: list[MLEnergyRow], seed: int = 0, k_decode: int = 4, k_prefill: int = 4,
                      step_times: str = "uniform") -> tuple[list[Example], dict[str, str]]:
    """Examples from usable rows, and ``{row key: reason}`` for the rows left out. ``step_times``: how a
    window's steps share the row's mean step time (:data:`.window.STEP_TIMES`; ``uniform``: the shipped
    models' data)."""
    if step_times not in STEP_TIMES:
        raise ValueError(f"step_times: {step_times!r} is not one of {', '.join(STEP_TIMES)}")
    out, skipped = [], {}
    for i, row in enumerate(rows):
        reason = exclusion_reason(row)
        dep = None
        if reason is None:
            try:
                dep = row_deployment(row)
            except InputError as exc:
                reason = f"architecture config not in the models catalog ({exc.field})"
        if reason is not None:
            skipped[row.key] = reason
            continue
        w = steady_window(row, seed=seed * 100003 + i, k_decode=k_decode, k_prefill=k_prefill)
        if step_times == "roofline":
            roof, _ = step_roofline_s(dep, w.steps)
            w.steps.duration_s = spread_step_times(row.step_duration_s, w.weight, roof)
        elif step_times == "kernel":
            base, _ = DurationModel(base="kernel").base_s(dep, w.steps)
            w.steps.duration_s = spread_step_times(row.step_duration_s, w.weight, base)
        out.append(Example(
            key=row.key, source=row.source, model=architecture_of(dep.model), family=name_family(row.model_id),
            gpu=row.gpu, deployment=dep, steps=w.steps, weight=w.weight, denom=w.tokens_per_step,
            target=w.target_j_per_token,
            meta={"task": row.task, "tp": row.tp, "batch": row.avg_batch_size, "precision": row.weight_precision,
                  "step_s": row.step_duration_s, "max_num_seqs": row.max_num_seqs, "file": row.file,
                  "moe": bool(getattr(dep.model, "num_experts", 0))},
        ))
    return out, skipped


def measured_examples(batches: list[MeasuredBatch], k_decode: int = 4) -> tuple[list[Example], dict[str, str]]:
    """Two examples per measured batch (prefill, decode)."""
    out, skipped = [], {}
    for m in batches:
        try:
            model = load_model(m.model)
            if m.layers < model.num_layers:
                model = model.with_layers(m.layers)
            gpu = load_gpu(m.gpu_name)
            dep = Deployment(model, gpu, Parallelism(tp=m.tp))
        except InputError as exc:
            skipped[m.key] = str(exc)
            continue
        common = dict(source=SOURCE_MEASURED, model=m.model, family=name_family(m.model), gpu=gpu.gpu_id, deployment=dep,
                      meta={"batch": m.batch, "prompt": m.prompt, "output": m.output, "tp": m.tp, "file": m.source_file})
        out.append(Example(key=m.key + "|prefill", steps=m.prefill_steps(), weight=np.ones(1), denom=1.0,
                           target=m.prefill_j, head="prefill", **common))
        if m.output > 1:
            steps, w = m.decode_steps(k_decode)
            out.append(Example(key=m.key + "|decode", steps=steps, weight=w, denom=1.0, target=m.decode_j, **common))
    return out, skipped


@dataclass
class Featurized:
    """Per-example features (numpy), computed once."""

    node_x: np.ndarray  # [S, N, F]
    global_x: np.ndarray  # [S, G]
    edge_index: np.ndarray
    prior_tot: np.ndarray  # [S, 4]
    prior_pre: np.ndarray  # [S, 4]
    duration_s: np.ndarray  # [S]
    features: StepFeatures = field(repr=False, default=None)
    e_low: np.ndarray = None  # [S] J: n x idle_w x t (physics.power_bounds_j)
    e_high: np.ndarray = None  # [S] J: n x tdp_w x t


def extra_globals(f: StepFeatures, duration_s: np.ndarray) -> np.ndarray:
    """Globals added to the graph module's: log(duration / Roofline time), the software overhead."""
    return np.log(np.maximum(duration_s, 1e-9) / np.maximum(f.roofline_s, 1e-12))[:, None].astype(np.float32)


def featurize_steps(dep: Deployment, steps: StepBatch, duration_model: DurationModel | None = None,
                    node_major: bool = False, low_precision_terms: bool = True) -> Featurized:
    """Features of steps; missing durations are filled by ``duration_model`` first. ``node_major``:
    the dynamic node features node-major in ``features.node_dyn`` instead of ``node_x`` (inference).
    ``low_precision_terms=False``: the prior's low-precision columns left 0 (a prior that does not
    use them: saves a second Roofline pass per call for FP8/MXFP4 models)."""
    f = step_features(dep, steps, node_major=node_major)
    dur = steps.duration_s
    if not np.isfinite(dur).all():
        if duration_model is None:
            raise ValueError("steps without observed duration need a duration model")
        dur = np.where(np.isfinite(dur), dur, duration_model.predict_steps_s(dep, steps))
        # only the duration globals depend on it: as step_features with the filled durations
        log_dur, has = duration_globals(dur)
        col = GLOBAL_FEATURE_NAMES.index("log_duration_s")
        f.global_x[:, col] = log_dur
        f.global_x[:, col + 1] = has
        f.duration_s = dur.copy()
    tot, pre = prior_terms(dep, f, dur, steps, low_precision_terms)
    gx = np.concatenate([f.global_x, extra_globals(f, dur)], axis=1)
    low, high = power_bounds_j(dep.n_gpus, dep.gpu, dur)
    return Featurized(f.node_x, gx, f.edge_index, tot, pre, dur, f, low, high)


def featurize(examples: list[Example]) -> list[Featurized]:
    return [featurize_steps(e.deployment, e.steps) for e in examples]


@dataclass
class Group:
    """Steps of one graph topology, as tensors."""

    x: torch.Tensor  # [S, N, F]
    adj: torch.Tensor  # [N, N]
    g: torch.Tensor  # [S, G]
    prior_tot: torch.Tensor  # [S, 4] float64
    prior_pre: torch.Tensor  # [S, 4] float64
    step_pos: torch.Tensor  # int64 [S], position in the packed step order
    e_low: torch.Tensor = None  # float64 [S], J (the power window, physics.power_bounds_j)
    e_high: torch.Tensor = None  # float64 [S], J


@dataclass
class Packed:
    """Examples packed for batched forward passes."""

    groups: list[Group]
    step_example: torch.Tensor  # int64 [S_total], example index of each step (packed order)
    step_weight: torch.Tensor  # float64 [S_total] (weight / denom)
    target: torch.Tensor  # float64 [K]
    is_prefill: torch.Tensor  # bool [K]
    n_steps: int
    n_examples: int


def pack(feats: list[Featurized], examples: list[Example], node_cols: np.ndarray, glob_cols: np.ndarray,
         norm: dict[str, np.ndarray], clip: bool = False) -> Packed:
    """Select feature columns, normalise them (``norm``: node_mean/std, glob_mean/std) and group by
    topology; ``clip``: the globals first clipped to ``norm['glob_lo']`` / ``['glob_hi']`` (the model's
    ``clip_inputs``)."""
    by_topo: dict[tuple, list[int]] = {}
    for i, fe in enumerate(feats):
        topo = (fe.node_x.shape[1], fe.edge_index.tobytes())
        by_topo.setdefault(topo, []).append(i)
    offsets = np.cumsum([0] + [fe.node_x.shape[0] for fe in feats])
    groups = []
    for (n_nodes, _), idx in by_topo.items():
        x = np.concatenate([feats[i].node_x[:, :, node_cols] for i in idx])
        g = np.concatenate([feats[i].global_x[:, glob_cols] for i in idx])
        if clip:
            g = clip_globals(g, norm)
        x = (x - norm["node_mean"]) / norm["node_std"]
        g = (g - norm["glob_mean"]) / norm["glob_std"]
        pos = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in idx])
        groups.append(Group(
            x=torch.from_numpy(x.astype(np.float32)),
            adj=mean_adjacency(torch.from_numpy(feats[idx[0]].edge_index), n_nodes),
            g=torch.from_numpy(g.astype(np.float32)),
            prior_tot=torch.from_numpy(np.concatenate([feats[i].prior_tot for i in idx])),
            prior_pre=torch.from_numpy(np.concatenate([feats[i].prior_pre for i in idx])),
            step_pos=torch.from_numpy(pos.astype(np.int64)),
            e_low=torch.from_numpy(np.concatenate([feats[i].e_low for i in idx]).astype(np.float64)),
            e_high=torch.from_numpy(np.concatenate([feats[i].e_high for i in idx]).astype(np.float64)),
        ))
    step_example = np.concatenate([np.full(fe.node_x.shape[0], k) for k, fe in enumerate(feats)])
    step_weight = np.concatenate([e.weight / e.denom for e in examples])
    return Packed(
        groups=groups,
        step_example=torch.from_numpy(step_example.astype(np.int64)),
        step_weight=torch.from_numpy(step_weight.astype(np.float64)),
        target=torch.tensor([e.target for e in examples], dtype=torch.float64),
        is_prefill=torch.tensor([e.head == "prefill" for e in examples]),
        n_steps=int(offsets[-1]),
        n_examples=len(examples),
    )


def clip_globals(g: np.ndarray, norm: dict[str, np.ndarray]) -> np.ndarray:
    """Raw globals (the model's columns) clipped to ``norm['glob_lo']`` / ``['glob_hi']`` when the
    model file has them (``ModelState.clip_inputs``)."""
    return np.clip(g, norm["glob_lo"], norm["glob_hi"]) if "glob_lo" in norm else g


def global_range(feats: list[Featurized], glob_cols: np.ndarray) -> dict[str, np.ndarray]:
    """``{"glob_lo", "glob_hi"}``: the raw range of the model's global columns over ``feats``."""
    g = np.concatenate([fe.global_x[:, glob_cols] for fe in feats])
    return {"glob_lo": g.min(0).astype(np.float32), "glob_hi": g.max(0).astype(np.float32)}


#: The globals that describe the conditions a model runs under rather than the model or the step: the
#: GPU's datasheet facts and the engine's step time (its overhead over the Roofline time). Clipping
#: scoped to them (:func:`scope_range`) keeps the network's reading of an unseen *model* (a larger
#: architecture, another family) and clips only an unseen GPU or engine, which ``clip_inputs`` is for.
CONDITION_GLOBALS = ("log_peak_tflops", "log_mem_bw_tb_s", "log_net_bw_gb_s", "log_mrp", "log_nrp", "tdp_kw",
                     "idle_kw", "log_duration_s", "has_duration", "log_overhead_ratio")


#: The globals that describe the model's shape (its architecture, not the step or the GPU).
SHAPE_GLOBALS = ("log_hidden", "log_intermediate", "log_heads", "log_kv_heads", "log_layers", "log_params",
                 "log_active_params", "log1p_experts", "experts_per_token")


def scope_range(norm: dict[str, np.ndarray], glob_names: list[str], scope: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``norm`` with its clip range (``glob_lo`` / ``glob_hi``) unbounded on every global column not in
    ``scope`` (``glob_names``: the model's global columns in order): those are then never clipped."""
    keep = np.array([n in scope for n in glob_names])
    lo = np.where(keep, norm["glob_lo"], -np.inf).astype(np.float32)
    hi = np.where(keep, norm["glob_hi"], np.inf).astype(np.float32)
    return {**norm, "glob_lo": lo, "glob_hi": hi}


def fit_normalizer(feats: list[Featurized], node_cols: np.ndarray, glob_cols: np.ndarray) -> dict[str, np.ndarray]:
    x = np.concatenate([fe.node_x[:, :, node_cols].reshape(-1, len(node_cols)) for fe in feats])
    g = np.concatenate([fe.global_x[:, glob_cols] for fe in feats])
    # a column constant over the training set carries no information there: map it to 0 everywhere
    # (a tiny std would blow an unseen GPU's or model's value up to a huge input)
    def std(a: np.ndarray) -> np.ndarray:
        s = a.std(0)
        return np.where(s < 1e-4, 1e9, np.maximum(s, 1e-2)).astype(np.float32)

    return {"node_mean": x.mean(0).astype(np.float32), "node_std": std(x),
            "glob_mean": g.mean(0).astype(np.float32), "glob_std": std(g)}


def example_prior_terms(feats: list[Featurized], examples: list[Example]) -> np.ndarray:
    """``[K, 4]``: each example's weighted step prior terms / denom (so ``@ coef`` predicts its target)."""
    rows = []
    for fe, e in zip(feats, examples):
        terms = fe.prior_pre if e.head == "prefill" else fe.prior_tot
        rows.append(e.weight @ terms / e.denom)
    return np.array(rows)


def example_duration_terms(feats: list[Featurized], examples: list[Example],
                           model: DurationModel) -> tuple[np.ndarray, np.ndarray]:
    """``([K, 3], [K])``: each example's probability-weighted mean of ``model``'s step terms
    (:meth:`.prior.DurationModel.step_terms`) and its observed mean step time."""
    a, y = [], []
    for fe, e in zip(feats, examples):
        p = e.weight / e.weight.sum()
        a.append(p @ model.step_terms(e.deployment, e.steps))
        y.append(float(p @ fe.duration_s))
    return np.array(a), np.array(y)
