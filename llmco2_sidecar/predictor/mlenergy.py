"""ML.ENERGY leaderboard v3 rows as typed records (training data for the step predictor).

One row is one steady-state serving configuration (model x task x GPU x #GPUs x max_num_seqs) of a
saturated vLLM 0.11.1 server: GPU energy per output token over a steady-state window, the average
running batch, the output throughput and the histogram of output lengths. Nothing per step or per
request is published, so :mod:`llmco2_sidecar.predictor.window` rebuilds the steady state.

Which rows are used (and why) is decided by :func:`usable_rows`; every excluded row carries its
reason so the model card can list them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError

#: Mean prompt length per task in tokens (ML.ENERGY v3.0 blog, Qwen3-32B comparison; see the
#: SOURCE.md of the data). Tasks without a published figure are not used.
TASK_PROMPT_MEAN_TOKENS = {"lm-arena-chat": 634.0, "gpqa": 224.0}

#: ML.ENERGY GPU names -> hardware catalog names.
GPU_NAMES = {"H100": "H100-SXM5-80GB", "B200": "B200", "A100": "A100-SXM4-40GB"}
SOURCE_V3 = "mlenergy-v3"


@dataclass(frozen=True)
class MLEnergyRow:
    """One ML.ENERGY v3 configuration.

    Attributes:
        model_id: Hugging Face id as published (e.g. ``"Qwen/Qwen3-8B"``).
        task: ``"lm-arena-chat"`` or ``"gpqa"``.
        gpu: ML.ENERGY GPU name (``"H100"``, ``"B200"``).
        num_gpus, tp, dp: GPUs used and their layout.
        weight_precision: ``"bfloat16"``, ``"fp8"`` or ``"mxfp4"``.
        architecture: ML.ENERGY's label (``"Dense Transformer"``, ``"MoE"``, ...).
        max_num_seqs: vLLM batch cap.
        avg_batch_size: mean running requests over the steady state.
        avg_output_len: mean output tokens per request.
        energy_per_token_j: GPU energy per output token (all GPUs summed), in J.
        avg_power_w: steady-state power (all GPUs summed), in W.
        output_tokens_per_s: output throughput over all replicas, tokens/s.
        hist_edges, hist_counts: output-length histogram (51 edges, 50 counts; may be empty).
    """

    model_id: str
    task: str
    gpu: str
    num_gpus: int
    tp: int
    dp: int
    weight_precision: str
    architecture: str
    max_num_seqs: int
    avg_batch_size: float
    avg_output_len: float
    energy_per_token_j: float
    avg_power_w: float
    output_tokens_per_s: float
    hist_edges: tuple[float, ...] = field(default=(), repr=False)
    hist_counts: tuple[int, ...] = field(default=(), repr=False)
    # set by other sources (ML.ENERGY v2, :mod:`.mlenergy_v2`); v3 leaves the defaults
    source: str = SOURCE_V3
    pp: int = 1
    ep: int = 1  # expert parallelism (v3 parallelization.expert_parallel)
    observed_step_s: float | None = None  # measured step time (v2: Avg TPOT); None: batch / throughput
    tokens_per_step: float | None = None  # output tokens a step emits; None: the running batch
    prompt_mean: float | None = None  # None: the task's published mean
    prompt_log_sigma: float | None = None  # None: the Azure trace's spread (window.PROMPT_LOG_SIGMA)
    max_prompt_tokens: int | None = None  # None: vLLM 0.11's chunk budget
    file: str = ""

    @property
    def key(self) -> str:
        return f"{self.source}|{self.model_id}|{self.task}|{self.gpu}x{self.num_gpus}|tp{self.tp}|seqs{self.max_num_seqs}"

    @property
    def family(self) -> str:
        """Model family used for leave-one-family-out splits."""
        name = self.model_id.split("/")[-1].lower()
        for fam in ("llama-3", "qwen3", "gemma-3", "nemotron"):
            if name.startswith(fam) or fam in name:
                return fam
        return name

    @property
    def step_duration_s(self) -> float:
        """Mean engine-step wall time: every running request emits one token per step, so a step
        takes ``batch / throughput`` (per replica: ``dp`` replicas share the throughput). Sources that
        measure it (v2's time per output token) give it directly."""
        if self.observed_step_s is not None:
            return self.observed_step_s
        return self.avg_batch_size * self.dp / self.output_tokens_per_s

    @property
    def prompt_mean_tokens(self) -> float:
        return self.prompt_mean if self.prompt_mean is not None else TASK_PROMPT_MEAN_TOKENS[self.task]


def _rows_from_model_file(path: Path) -> list[MLEnergyRow]:
    doc = json.loads(path.read_text())
    rows = []
    for c in doc.get("configurations", []):
        par = c.get("parallelization") or {}
        hist = c.get("output_length_distribution") or doc.get("output_length_distribution") or {}
        rows.append(
            MLEnergyRow(
                model_id=str(doc["model_id"]),
                task=str(doc["task"]),
                gpu=str(c["gpu_model"]),
                num_gpus=int(c["num_gpus"]),
                tp=int(par.get("tensor_parallel", c.get("tensor_parallel", 1)) or 1),
                dp=int(par.get("data_parallel", c.get("data_parallel", 1)) or 1),
                ep=int(par.get("expert_parallel", c.get("expert_parallel", 1)) or 1),
                weight_precision=str(doc.get("weight_precision", c.get("weight_precision", "bfloat16"))),
                architecture=str(doc.get("architecture", "")),
                max_num_seqs=int(c["max_num_seqs"]),
                avg_batch_size=float(c["avg_batch_size"]),
                avg_output_len=float(c["avg_output_len"]),
                energy_per_token_j=float(c["energy_per_token_joules"]),
                avg_power_w=float(c["avg_power_watts"]),
                output_tokens_per_s=float(c["output_throughput_tokens_per_sec"]),
                hist_edges=tuple(float(x) for x in hist.get("bins", ())),
                hist_counts=tuple(int(x) for x in hist.get("counts", ())),
            )
        )
    return rows


def load_rows(data_dir: str | Path) -> list[MLEnergyRow]:
    """Read every ``models/*.json`` under ``data_dir`` (the v3 ``public/data`` folder or a copy of
    its ``models`` folder). Raises :class:`InputError` if there is none."""
    root = Path(data_dir)
    files = sorted((root / "models").glob("*.json")) if (root / "models").is_dir() else sorted(root.glob("*__*.json"))
    if not files:
        raise InputError("data", f"no ML.ENERGY v3 model files under {root}", "a folder with models/*.json")
    rows: list[MLEnergyRow] = []
    for f in files:
        rows.extend(_rows_from_model_file(f))
    return rows


def exclusion_reason(row: MLEnergyRow, supported_models: set[str] | None = None) -> str | None:
    """Why a row cannot train the dense step model, or None if it can."""
    if row.architecture not in ("Dense Transformer", "MoE"):
        return f"architecture {row.architecture!r} (dense and mixture-of-experts transformers are modelled)"
    if row.task not in TASK_PROMPT_MEAN_TOKENS and row.prompt_mean is None:
        return f"task {row.task!r} has no published prompt-length figure"
    if row.gpu not in GPU_NAMES:
        return f"GPU {row.gpu!r} not in the catalog mapping"
    if row.weight_precision not in ("bfloat16", "fp8", "mxfp4"):
        return f"weight precision {row.weight_precision!r}"
    if supported_models is not None and row.model_id not in supported_models:
        return "architecture config not in the models catalog"
    if row.pp != 1:
        return f"pipeline parallelism {row.pp} (the window models one stage per step)"
    if not row.hist_counts or sum(row.hist_counts) == 0:
        return "no output-length histogram"
    if not (row.energy_per_token_j > 0 and row.output_tokens_per_s > 0 and row.avg_batch_size > 0):
        return "non-positive energy, throughput or batch"
    return None


def output_length_sampler(row: MLEnergyRow, rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw ``n`` output lengths from the row's histogram (uniform inside a bin), int64 >= 1."""
    edges = np.asarray(row.hist_edges, dtype=np.float64)
    counts = np.asarray(row.hist_counts, dtype=np.float64)
    p = counts / counts.sum()
    b = rng.choice(len(counts), size=n, p=p)
    x = edges[b] + rng.random(n) * (edges[b + 1] - edges[b])
    return np.maximum(1, np.round(x)).astype(np.int64)
