"""The trained 2-GNN step predictor (paper section 4.1) behind :class:`StepPredictor`.

Per step: a physics prior (:mod:`.prior`) gives a prior energy from the observed (or predicted)
duration, FLOPs and bytes; GNN 1 predicts the prefill energy as a log-residual over the prefill
prior; its prediction joins GNN 2's global features; GNN 2 predicts the total energy as a
log-residual over the total prior. Variants used by the baselines and the ablation switch off the
prior (a learned constant instead), the phase separation (one GNN) or the Roofline features.

A model file is two files side by side: ``NAME.safetensors`` (weights and normalisation arrays)
and ``NAME.json`` (configuration, feature names, prior and duration coefficients, scores).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..graph import GLOBAL_FEATURE_NAMES, NODE_FEATURE_NAMES
from ..workload import StepBatch
from .api import Deployment, StepPrediction, StepPredictor
from .dataset import Featurized, Packed, clip_globals, featurize_steps
from .fused import FusedForward
from .layers import TwoStageGNN, mean_adjacency
from .physics import GuardStats, apply_power_bounds, soft_window_log
from .prior import DurationModel, PhysicsPrior
from .threads import match_torch_threads
from .widen import widen

WEIGHTS_DIR = Path(__file__).with_name("weights")
DEFAULT_MODEL = WEIGHTS_DIR / "llmco2-gnn-v2.safetensors"
#: the mixture-of-experts model (trained on dense and MoE rows; predictor/routed.py)
DEFAULT_MOE_MODEL = WEIGHTS_DIR / "llmco2-gnn-moe-v1.safetensors"
FORMAT_VERSION = 3  # 3: datasheet-scaled prior terms, Roofline-floored durations (2026-12-06)

ALL_GLOBALS = tuple(GLOBAL_FEATURE_NAMES) + ("log_overhead_ratio",)
_ROOFLINE_NODE = ("log_time_us", "log_mai", "log_perf_tflops", "bound_memory")
_ROOFLINE_GLOBAL = ("log_roofline_s", "log_peak_tflops", "log_mem_bw_tb_s", "log_net_bw_gb_s", "log_mrp", "log_nrp",
                    "log_overhead_ratio")
_PHASE_GLOBAL = ("log_prefill_tokens", "log_decode_tokens", "log_flops_prefill", "log_flops_decode",
                 "log_mem_bytes_prefill", "log_mem_bytes_decode")


@dataclass
class GNNConfig:
    """Architecture switches (see module docstring)."""

    name: str = "llmco2-gnn-v2"
    hidden: int = 16
    two_stage: bool = True
    use_prior: bool = True
    roofline_features: bool = True
    phase_features: bool = True
    #: the power window inside the model (:func:`~.physics.soft_window_log`), trained through: the
    #: product's hard guard then never binds. Part of the MoE recipe (``llmco2 train --moe-recipe``);
    #: off by default and in model files written before it (hard clamp).
    soft_window: bool = False
    #: whether the network reads the global ``log_simt_us`` (CUDA-core seconds of weight conversion,
    #: graph.dequant): set by training when a row of its training side has any (MoE / low-precision
    #: data); a model whose data never had any (dense 16-bit) keeps the columns it had before the
    #: feature, so its file reproduces byte for byte. Off in model files written before it.
    simt_feature: bool = False

    def node_columns(self) -> list[str]:
        cols = []
        for c in NODE_FEATURE_NAMES:
            if not self.phase_features and (c.startswith("prefill_") or c.startswith("decode_")):
                continue
            if not self.roofline_features and any(c.endswith(r) for r in _ROOFLINE_NODE):
                continue
            cols.append(c)
        return cols

    def global_columns(self) -> list[str]:
        cols = []
        for c in ALL_GLOBALS:
            if not self.roofline_features and c in _ROOFLINE_GLOBAL:
                continue
            if not self.phase_features and c in _PHASE_GLOBAL:
                continue
            if c == "log_simt_us" and not (self.simt_feature and self.roofline_features):
                continue
            cols.append(c)
        return cols


@dataclass
class ModelState:
    """Everything besides the network weights."""

    config: GNNConfig
    norm: dict[str, np.ndarray]
    prior: PhysicsPrior
    duration: DurationModel
    log_bias: float = 0.0  # per-step log energy used instead of the prior when use_prior is False
    info: dict = field(default_factory=dict)
    #: the total head's log-residual over the prior, as used: ``scale x clip(residual, -bound, bound)``
    #: (chosen on the training side's validation architectures, :func:`~.training.choose_shrink`;
    #: 1 and inf: the network's residual unchanged)
    residual_scale: float = 1.0
    residual_bound: float = float("inf")
    #: the GNN's global inputs clipped to the range its training side spanned (``norm['glob_lo']`` /
    #: ``['glob_hi']``) before it reads them: outside the conditions it has seen (a GPU, engine or
    #: step-time ratio beyond its data) the network corrects the prior as at the edge of them, and the
    #: physics prior alone carries the extrapolation
    clip_inputs: bool = False


class GNNPredictor(StepPredictor):
    """The 2-GNN (or a variant) with its prior, duration model and normalisation.

    ``net`` may be a list of networks sharing the features, prior and normalisation (an ensemble of
    the hyper-parameter grid): their log predictions are averaged.
    """

    def __init__(self, net: TwoStageGNN | list[TwoStageGNN], state: ModelState):
        self.nets = [n.eval() for n in (net if isinstance(net, list) else [net])]
        self.state = state
        self.name = state.config.name
        cfg = state.config
        self._node_idx = np.array([NODE_FEATURE_NAMES.index(c) for c in cfg.node_columns()])
        self._glob_idx = np.array([ALL_GLOBALS.index(c) for c in cfg.global_columns()])
        self._adj_cache: dict[tuple[int, bytes], torch.Tensor] = {}
        self._fused_fwd: FusedForward | None = None
        self._clip_full: tuple | None = None  # (norm array ids, full-row clip bounds): _full_clip_bounds
        #: how often the power window (idle floor, TDP cap) acted on this predictor's steps
        self.guard = GuardStats()

    # ---- core ----------------------------------------------------------------------------
    def log_priors_np(self, prior_tot: np.ndarray, prior_pre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-step log prior energies (total, prefill) in log J, float32. NumPy: the sidecar calls it
        once per micro-batch, where a dozen torch calls cost more than the arithmetic."""
        if self.state.config.use_prior:
            coef = np.asarray(self.state.prior.coef, dtype=np.float64)
            tot = np.maximum(prior_tot @ coef, 1e-9)
            pre = np.maximum(np.maximum(prior_pre @ coef, 1e-9), 1e-3 * tot)
            return np.log(tot).astype(np.float32), np.log(pre).astype(np.float32)
        c = np.full(prior_tot.shape[0], float(self.state.log_bias), dtype=np.float32)
        return c, c

    def log_priors(self, prior_tot: torch.Tensor, prior_pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`log_priors_np` for tensors (training, the batched path); the priors are inputs, not
        learned, so nothing flows back through them."""
        lt, lp = self.log_priors_np(prior_tot.detach().cpu().numpy(), prior_pre.detach().cpu().numpy())
        return torch.from_numpy(lt), torch.from_numpy(lp)

    @property
    def net(self) -> TwoStageGNN:
        """The first (for a single model: the only) network."""
        return self.nets[0]

    @property
    def _uses_lowp(self) -> bool:
        """Whether the prior uses its low-precision terms (else predict_steps skips computing them)."""
        from .prior import N_BASE_TERMS

        return bool(self.state.config.use_prior and np.any(np.asarray(self.state.prior.coef)[N_BASE_TERMS:] != 0))

    def shrink(self, log_tot, log_prior_tot):
        """The total head's log energy with its residual over the prior scaled and bounded
        (``ModelState.residual_scale`` / ``residual_bound``); NumPy or torch."""
        a, b = float(self.state.residual_scale), float(self.state.residual_bound)
        if a == 1.0 and not np.isfinite(b):
            return log_tot
        r = log_tot - log_prior_tot
        r = r.clamp(-b, b) if isinstance(r, torch.Tensor) else np.clip(r, -b, b)
        return log_prior_tot + a * r

    def forward_group(self, x, adj, g, prior_tot, prior_pre) -> tuple[torch.Tensor, torch.Tensor]:
        lt, lp = self.log_priors(prior_tot, prior_pre)
        if len(self.nets) == 1:
            out_p, out_t = self.nets[0](x, adj, g, lp, lt)
        else:
            outs = [n(x, adj, g, lp, lt) for n in self.nets]
            out_p, out_t = torch.stack([o[0] for o in outs]).mean(0), torch.stack([o[1] for o in outs]).mean(0)
        return out_p, self.shrink(out_t, lt)

    def forward_packed(self, packed: Packed) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log_pre [S], log_tot [S], step_pos [S])`` over all groups (group order)."""
        pres, tots, poss = [], [], []
        for grp in packed.groups:
            lp, lt = self.forward_group(grp.x, grp.adj, grp.g, grp.prior_tot, grp.prior_pre)
            pres.append(lp)
            tots.append(lt)
            poss.append(grp.step_pos)
        return torch.cat(pres), torch.cat(tots), torch.cat(poss)

    def bounded_energy(self, packed: Packed, log_tot: torch.Tensor) -> torch.Tensor:
        """Step energies (J, float64, packed group order) inside the power window, as the product
        predicts them (:mod:`.physics`): the soft window when the model has one, then the hard clamp."""
        lo = torch.cat([g.e_low for g in packed.groups])
        hi = torch.cat([g.e_high for g in packed.groups])
        lt = log_tot.double()
        if self.state.config.soft_window:
            lt = soft_window_log(lt, torch.log(lo.clamp(min=1e-300)), torch.log(hi.clamp(min=1e-300)), xp=torch)
        return torch.minimum(torch.maximum(torch.exp(lt), lo), hi)

    def predict_packed(self, packed: Packed) -> np.ndarray:
        """Example predictions (same unit as the targets), power window applied as in the product."""
        with torch.no_grad():
            _, lt, pos = self.forward_packed(packed)
            contrib = packed.step_weight[pos] * self.bounded_energy(packed, lt)
            pred = torch.zeros(packed.n_examples, dtype=torch.float64).index_add_(0, packed.step_example[pos], contrib)
        return pred.numpy()

    # ---- StepPredictor -------------------------------------------------------------------
    def _normalized(self, fe: Featurized) -> tuple[np.ndarray, torch.Tensor, np.ndarray]:
        """``(x [S,N,F], adj [N,N], g [S,G])``: the model's feature columns, normalised (float32), and
        the layer graph's mean adjacency (cached per topology)."""
        n = self.state.norm
        x = (fe.node_x[:, :, self._node_idx] - n["node_mean"]) / n["node_std"]
        g = (self.clipped_globals(fe.global_x[:, self._glob_idx]) - n["glob_mean"]) / n["glob_std"]
        key = (fe.node_x.shape[1], fe.edge_index.tobytes())
        adj = self._adj_cache.get(key)
        if adj is None:
            adj = self._adj_cache[key] = mean_adjacency(torch.from_numpy(fe.edge_index), fe.node_x.shape[1])
        return np.ascontiguousarray(x, dtype=np.float32), adj, np.ascontiguousarray(g, dtype=np.float32)

    def heldout_scores(self, deployment: Deployment | None = None) -> dict[str, float]:
        from .heldout import scores_from_info

        return scores_from_info(self.state.info)

    def clipped_globals(self, g: np.ndarray) -> np.ndarray:
        """``g`` (the model's global columns, raw) clipped to the training range when the model says so."""
        return clip_globals(g, self.state.norm) if self.state.clip_inputs else g

    def _full_clip_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """``(lo, hi)`` over the full global row (unbounded outside the model's columns), or None."""
        n = self.state.norm
        if not self.state.clip_inputs or "glob_lo" not in n:
            return None
        key = (id(n["glob_lo"]), id(n["glob_hi"]))
        hit = self._clip_full
        if hit is None or hit[0] != key:
            lo = np.full(len(ALL_GLOBALS), -np.inf)
            hi = np.full(len(ALL_GLOBALS), np.inf)
            lo[self._glob_idx], hi[self._glob_idx] = n["glob_lo"], n["glob_hi"]
            hit = self._clip_full = (key, (lo, hi))
        return hit[1]

    def _tensors(self, fe: Featurized) -> tuple[torch.Tensor, ...]:
        x, adj, g = self._normalized(fe)
        return (torch.from_numpy(x), adj, torch.from_numpy(g), torch.from_numpy(fe.prior_tot),
                torch.from_numpy(fe.prior_pre))

    def _fused(self) -> FusedForward:
        """The fused inference forward, rebuilt when a parameter changed (training goes on)."""
        match_torch_threads()  # NumPy's BLAS team as torch's intra-op one (predictor/threads.py)
        f = self._fused_fwd
        if f is None or f.stamp(self.nets) != f.built_at:
            from ..graph.kernels import KERNEL_TYPES

            n_static = len(KERNEL_TYPES) + 3
            f = self._fused_fwd = FusedForward(self.nets, self.state.norm, self._node_idx, self._glob_idx, n_static,
                                               len(NODE_FEATURE_NAMES) - n_static, len(ALL_GLOBALS))
        return f

    def _fused_inputs(self, fe: Featurized, fused: FusedForward | None = None) -> tuple:
        """The inputs of :class:`FusedForward` for node-major features (``featurize_steps(...,
        node_major=True)``): the layer graph's plan, the dynamic node features, the raw globals and
        the log priors (prefill, total)."""
        fused = fused or self._fused()
        g = fe.features.layer_graph
        n = g.n_nodes

        def adj() -> np.ndarray:
            return mean_adjacency(torch.from_numpy(g.edge_index), n).numpy()

        # static features as the reference path sees them (float32 node_x)
        plan = fused.plan_for(g, g.static_nodes.astype(np.float32), adj)
        lt, lp = self.log_priors_np(fe.prior_tot, fe.prior_pre)
        bounds = self._full_clip_bounds()
        glob = fe.global_x if bounds is None else np.clip(fe.global_x, bounds[0], bounds[1])
        return plan, fe.features.node_dyn, glob, lp, lt

    def predict_duration_s(self, deployment: Deployment, steps: StepBatch) -> np.ndarray:
        """The ``duration_s`` that :meth:`predict_steps` would return, without the energy (the
        simulator needs step times before it can go on; energies are predicted later in bulk)."""
        dur = steps.duration_s
        if np.isfinite(dur).all():
            return dur
        return np.where(np.isfinite(dur), dur, self.state.duration.predict_steps_s(deployment, steps))

    def predict_steps(self, deployment: Deployment, steps: StepBatch, reference: bool = False) -> StepPrediction:
        """Energy of every step. The GNN runs as the fused NumPy forward (:mod:`.fused`, the product's
        path); ``reference=True`` runs the torch modules instead (what training fits and the
        accuracy benchmark scores; the tests hold the two within 1e-5 in log energy)."""
        if steps.n_steps == 0:
            z = np.zeros(0)
            return StepPrediction(z, z.copy(), z.copy())
        if reference:
            fe = featurize_steps(deployment, steps, self.state.duration, low_precision_terms=self._uses_lowp)
            with torch.no_grad():
                lp_t, lt_t = self.forward_group(*self._tensors(fe))  # forward_group applies the shrink
            lp, lt = lp_t.numpy(), lt_t.numpy().astype(np.float64)
        else:
            fe = featurize_steps(deployment, steps, self.state.duration, node_major=True,
                                 low_precision_terms=self._uses_lowp)
            fused = self._fused()
            inputs = self._fused_inputs(fe, fused)
            lp, lt = fused(*inputs)
            lt = self.shrink(lt.astype(np.float64), inputs[4].astype(np.float64))
        lp = lp.astype(np.float64)
        if self.state.config.soft_window:  # the model's own power window (the guard below then never binds)
            lt = soft_window_log(lt, np.log(np.maximum(fe.e_low, 1e-300)), np.log(np.maximum(fe.e_high, 1e-300)))
            tot = np.minimum(np.maximum(np.exp(lt), fe.e_low), fe.e_high)  # exp(log(x)): one ulp either way
        else:
            tot = np.exp(lt)
        pre = np.exp(lp) if self.state.config.two_stage else tot * _prefill_share(fe)
        pre = np.where(fe.features.prefill_tokens > 0, np.minimum(pre, tot), 0.0)
        # the power window (idle floor, TDP cap): a guard, counted in self.guard; the accuracy
        # benchmark scores the same bounded prediction (predict_packed)
        tot, pre = apply_power_bounds(tot, pre, fe.e_low, fe.e_high, self.guard)
        return StepPrediction(energy_j=tot, prefill_energy_j=pre, duration_s=fe.duration_s.copy())

    # ---- files ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors) and its ``.json`` metadata; returns the weights path."""
        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"net{i}.{k}": v.detach().contiguous() for i, n in enumerate(self.nets) for k, v in n.state_dict().items()}
        tensors.update({f"norm.{k}": torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in self.state.norm.items()})
        save_file(tensors, str(path), metadata={"format_version": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "config": asdict(self.state.config),
            "member_hidden": [n.tot.lin2.in_features for n in self.nets],
            "node_columns": self.state.config.node_columns(),
            "global_columns": self.state.config.global_columns(),
            "prior_coef": self.state.prior.coef.tolist(),
            "duration_coef": self.state.duration.coef.tolist(),
            "duration_base": self.state.duration.base,
            "log_bias": self.state.log_bias,
            "residual_scale": self.state.residual_scale,
            "residual_bound": self.state.residual_bound if np.isfinite(self.state.residual_bound) else None,
            "clip_inputs": self.state.clip_inputs,
            "info": self.state.info,
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        path.chmod(0o644)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "GNNPredictor":
        path = Path(path).with_suffix(".safetensors")
        meta = json.loads(path.with_suffix(".json").read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: model format {meta.get('format_version')} (this code reads {FORMAT_VERSION})")
        cfg = GNNConfig(**{"soft_window": False, **meta["config"]})  # files older than the soft window: hard clamp
        tensors = load_file(str(path))
        if cfg.node_columns() != meta["node_columns"] or cfg.global_columns() != meta["global_columns"]:
            tensors = widen(tensors, meta, cfg, path)
        norm = {k[5:]: tensors[k].numpy() for k in tensors if k.startswith("norm.")}
        nets = []
        for i, hidden in enumerate(meta["member_hidden"]):
            net = TwoStageGNN(len(cfg.node_columns()), len(cfg.global_columns()), int(hidden), cfg.two_stage)
            prefix = f"net{i}."
            net.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
            nets.append(net)
        duration = DurationModel(np.array(meta["duration_coef"]), meta.get("duration_base", "roofline"))  # older: roofline
        state = ModelState(cfg, norm, PhysicsPrior(np.array(meta["prior_coef"])), duration,
                           float(meta["log_bias"]), meta.get("info", {}), float(meta.get("residual_scale", 1.0)),
                           float("inf") if meta.get("residual_bound") is None else float(meta["residual_bound"]),
                           bool(meta.get("clip_inputs", False)))
        return cls(nets, state)


def _prefill_share(fe: Featurized) -> np.ndarray:
    f = fe.features
    return f.roofline_s_prefill / np.maximum(f.roofline_s_prefill + f.roofline_s_decode, 1e-30)


def load_default() -> GNNPredictor | None:
    """The shipped model, or None when no model file is shipped (the caller falls back to Roofline)."""
    if not DEFAULT_MODEL.exists() or not DEFAULT_MODEL.with_suffix(".json").exists():
        return None
    return GNNPredictor.load(DEFAULT_MODEL)


def load_default_moe() -> GNNPredictor | None:
    """The shipped mixture-of-experts model, or None when its file is not shipped."""
    if not DEFAULT_MOE_MODEL.exists() or not DEFAULT_MOE_MODEL.with_suffix(".json").exists():
        return None
    return GNNPredictor.load(DEFAULT_MOE_MODEL)
