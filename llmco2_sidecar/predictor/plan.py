"""Targeted sampling (paper 4.1) written out as the next measurement plan for ``llmco2 profile``.

Candidates are drawn from the Azure 2023 request distribution (prompt and output lengths of the
conversation trace bundled in ``llmco2_sidecar/data``) over common models and GPUs, in the paper's unit (a static batch).
Each candidate is scored by how much the predictors disagree on it and how far it lies from the
measured data: the relative spread of the trained model, the physics prior and the Roofline
estimate (``max/min - 1`` of their batch energies), times 1.5 when its GPU or model has no
measurement yet. The highest-scoring ones become the plan, taken round-robin over the GPUs. With no labels yet at the candidates,
disagreement and novelty stand in for the error the paper refines around; once the profiler has
measured them, ``llmco2 train`` learns from them and the next plan moves on.

The file format is in ``.notes/plan-schema.md`` (CSV: one row per batch to measure).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..hardware.catalog import load_gpu
from ..models.catalog import load_model
from ..workload import Parallelism
from .api import Deployment, StepPredictor

PLAN_COLUMNS = ("priority", "model", "gpu", "tp", "layers", "batch", "prompt", "output", "repetitions", "reason")

#: Models and GPUs the plan draws from (bundled configs; GPUs people serve on).
PLAN_MODELS = ("meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B", "meta-llama/Llama-2-7b-hf", "mistralai/Mistral-7B-v0.3",
               "Qwen/Qwen3-14B", "meta-llama/Llama-2-13b-hf", "Qwen/Qwen3-32B", "meta-llama/Llama-3.1-70B")
PLAN_GPUS = ("A100-SXM4-80GB", "H100-SXM5-80GB", "H200-SXM-141GB", "L40S", "L4", "B200")
BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


@dataclass(frozen=True)
class PlanRow:
    priority: int
    model: str
    gpu: str
    tp: int
    layers: int
    batch: int
    prompt: int
    output: int
    repetitions: int
    reason: str


#: The Azure 2023 conversation trace bundled with the package (CC-BY-4.0, see data/LICENSE-azure-trace-*).
AZURE_CONV = Path(__file__).resolve().parent.parent / "data" / "azure_conv_2023.csv"


def azure_lengths(trace_csv: str | Path, rng: np.random.Generator, n: int) -> np.ndarray:
    """``[n, 2]`` (prompt, output) pairs drawn from an Azure trace CSV (ContextTokens, GeneratedTokens)."""
    path = Path(trace_csv)
    if not path.exists():
        raise InputError("azure", f"missing {path}")
    with path.open() as fh:
        pairs = np.array([[int(r["ContextTokens"]), int(r["GeneratedTokens"])] for r in csv.DictReader(fh)])
    return pairs[rng.choice(len(pairs), size=n, replace=True)]


def _fits(dep: Deployment, batch: int, prompt: int, output: int) -> bool:
    m = dep.model
    need = m.weight_bytes / dep.n_gpus + batch * (prompt + output) * m.kv_bytes_per_token / dep.n_gpus
    return need < 0.85 * dep.gpu.memory_bytes


def build_plan(predictors: list[StepPredictor], trace_csv: str | Path, measured_gpus: set[str], measured_models: set[str],
               n_candidates: int = 400, n_plan: int = 48, seed: int = 0, batch_energy=None) -> list[PlanRow]:
    """Score Azure-drawn candidates by predictor disagreement x novelty; return the top ``n_plan``.

    ``batch_energy(predictor, dep, batch, prompt, output) -> J`` computes a batch's energy (the
    caller passes the schedule-based one; see :func:`llmco2_sidecar.schedule.batch_steps`).
    """
    if batch_energy is None:
        batch_energy = schedule_batch_energy
    rng = np.random.default_rng(seed)
    lengths = azure_lengths(trace_csv, rng, n_candidates)
    cands = []
    for i in range(n_candidates):
        model_id = PLAN_MODELS[rng.integers(len(PLAN_MODELS))]
        gpu_id = PLAN_GPUS[rng.integers(len(PLAN_GPUS))]
        batch = int(BATCHES[rng.integers(len(BATCHES))])
        prompt = int(min(lengths[i, 0], 4096))
        output = int(max(2, min(lengths[i, 1], 1024)))
        model, gpu = load_model(model_id), load_gpu(gpu_id)
        tp = 1
        while tp <= 8 and not _fits(Deployment(model, gpu, Parallelism(tp=tp)), batch, prompt, output):
            tp *= 2
        if tp > 8:
            continue
        dep = Deployment(model, gpu, Parallelism(tp=tp))
        try:
            energies = np.array([batch_energy(p, dep, batch, prompt, output) for p in predictors])
        except InputError:
            continue
        spread = float(energies.max() / max(energies.min(), 1e-9) - 1)
        novelty = 1.5 if (gpu.gpu_id not in measured_gpus or model_id not in measured_models) else 1.0
        cands.append((spread * novelty, model_id, gpu.gpu_id, tp, model.num_layers, batch, prompt, output,
                      f"predictors disagree by {spread * 100:.0f}%" + ("; unmeasured GPU/model" if novelty > 1 else "")))
    cands.sort(key=lambda c: -c[0])
    # round-robin over GPUs (best first within each) so one poorly known GPU does not fill the plan
    by_gpu: dict[str, list] = {}
    for c in cands:
        by_gpu.setdefault(c[2], []).append(c)
    order = sorted(by_gpu, key=lambda g: -by_gpu[g][0][0])
    seen, out = set(), []
    while len(out) < n_plan and any(by_gpu.values()):
        for g in order:
            while by_gpu[g]:
                c = by_gpu[g].pop(0)
                if c[1:6] in seen:
                    continue
                seen.add(c[1:6])
                out.append(PlanRow(len(out) + 1, c[1], c[2], c[3], c[4], c[5], c[6], c[7], 5, c[8]))
                break
            if len(out) == n_plan:
                break
    return out


def schedule_batch_energy(predictor: StepPredictor, dep: Deployment, batch: int, prompt: int, output: int) -> float:
    """GPU energy of a static batch: the sum of its scheduled steps (KV preemption included)."""
    from ..schedule import batch_steps

    return float(predictor.predict_steps(dep, batch_steps(dep, batch, prompt, output).steps).energy_j.sum())


class PriorPredictor(StepPredictor):
    """The physics prior of a trained model alone (durations from its duration model)."""

    def __init__(self, model) -> None:
        self.model = model
        self.name = model.name + "-prior"

    def predict_steps(self, deployment: Deployment, steps):
        from .api import StepPrediction
        from .dataset import featurize_steps

        fe = featurize_steps(deployment, steps, self.model.state.duration)
        e = fe.prior_tot @ self.model.state.prior.coef
        return StepPrediction(e, np.minimum(fe.prior_pre @ self.model.state.prior.coef, e), fe.duration_s)


def write_plan(rows: list[PlanRow], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(PLAN_COLUMNS)
        for r in rows:
            w.writerow([r.priority, r.model, r.gpu, r.tp, r.layers, r.batch, r.prompt, r.output, r.repetitions, r.reason])
    return path


def read_plan(path: str | Path) -> list[PlanRow]:
    """Parse a plan file (for tests and for ``llmco2 profile --plan``)."""
    with Path(path).open(newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in PLAN_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError("plan", f"missing columns {missing}", ", ".join(PLAN_COLUMNS))
        return [PlanRow(int(r["priority"]), r["model"], r["gpu"], int(r["tp"]), int(r["layers"]), int(r["batch"]),
                        int(r["prompt"]), int(r["output"]), int(r["repetitions"]), r["reason"]) for r in reader]
