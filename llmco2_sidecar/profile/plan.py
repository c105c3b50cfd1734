"""The profiling plan: which (model, layers, batch, prompt, output) points to measure, sized to a time
budget by a Roofline-ish estimate of each point's run time. Pure Python (no torch, no numpy), so
``--dry-run`` works anywhere.

Points come from two sources per model, interleaved so that a plan cut short by its budget keeps
both: (batch, prompt, output) drawn from the Azure LLM inference trace 2023 (conversation) with a
batch drawn from 1..64, and a fixed grid (batches 1..64, prompts 128..2048, outputs 16..256).
Outputs are clipped to 16..256 and prompts to 16..4096 (and to the model's context).

Estimate of one point (HF eager, bf16): per forward, ``max(flops / (peak x 0.5), bytes / (bw x 0.6))``
plus a per-layer host overhead (HF eager launches each kernel from Python); prefill is one forward over
``batch x prompt`` tokens, decode ``output - 1`` forwards of ``batch`` tokens each with the cache
(re-copied every step by the dynamic cache). A measured window shorter than ``min_window_s`` is
repeated ``ceil(min_window_s / t)`` times (NVML's energy counter moves about every 100 ms); a point is
a warm-up (two prefills, one decode) plus ``repetitions`` measured repetitions. These factors are guesses for sizing a plan, not
data: the runner rescales them by the measured/estimated ratio as it goes.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputError
from ..models.spec import ModelSpec

# (Hugging Face id, layers or None for full depth): 7-8B models at full depth; bigger ones truncated
# so their (full-size) layers fit one 80 GB GPU together with a batch of 64 long prompts.
DEFAULT_MODELS: tuple[tuple[str, int | None], ...] = (
    ("meta-llama/Llama-3.1-8B", None),
    ("Qwen/Qwen3-8B", None),
    ("meta-llama/Llama-2-7b-hf", None),
    ("mistralai/Mistral-7B-v0.3", None),
    ("Qwen/Qwen2.5-7B", None),
    ("meta-llama/Llama-2-13b-hf", 20),
    ("Qwen/Qwen3-32B", 16),
    ("meta-llama/Llama-3.1-70B", 8),
)
BATCHES = (1, 2, 4, 8, 16, 32, 64)
GRID_BATCHES = (1, 4, 16, 64)
GRID_PROMPTS = (128, 512, 2048)
GRID_OUTPUTS = (16, 64, 256)
OUTPUT_RANGE = (16, 256)
PROMPT_RANGE = (16, 4096)

# sizing constants (guesses; see module docstring)
COMPUTE_EFFICIENCY = 0.5
MEMORY_EFFICIENCY = 0.6
LAYER_OVERHEAD_S = 0.25e-3  # host time per decoder layer per forward in HF eager
FORWARD_OVERHEAD_S = 1.5e-3  # embedding, lm_head launch, sampling, cache bookkeeping
POINT_OVERHEAD_S = 0.3  # input creation, synchronisations, meter reads, CSV row
DEFAULT_MIN_WINDOW_S = 0.5  # five ~100 ms steps of NVML's energy counter (the runner raises it where the counter is coarser)
STARTUP_S = 8.0  # CUDA context, NVML, allocator warm-up (excluding the idle measurement)
MEMORY_FRACTION = 0.85
MAX_POINT_SHARE = 0.2  # no single point may take more than this share of its model's budget  # plan only points that fit this fraction of the GPU memory

AZURE_BUNDLED = Path(__file__).resolve().parents[1] / "data" / "azure_conv_2023.csv"


@dataclass(frozen=True)
class GpuLimits:
    """What the estimate needs of a device."""

    name: str
    peak_flops: float  # dense bf16 FLOP/s
    mem_bandwidth_bytes_s: float
    memory_bytes: float
    source: str = ""


# used when the hardware catalog cannot be imported (e.g. Python 3.10 without tomli on a GPU box)
_FALLBACK_GPUS = {
    "h100": GpuLimits("NVIDIA H100 SXM5 80GB", 989.5e12, 3350e9, 80e9, "fallback constants (datasheet)"),
    "h200": GpuLimits("NVIDIA H200 SXM 141GB", 989.5e12, 4800e9, 141e9, "fallback constants (datasheet)"),
    "a100": GpuLimits("NVIDIA A100 SXM4 80GB", 312e12, 2039e9, 80e9, "fallback constants (datasheet)"),
}
CPU_LIMITS = GpuLimits("CPU (smoke)", 0.2e12, 20e9, 8e9, "smoke-run guess")


def gpu_limits(name: str, memory_bytes: float | None = None) -> GpuLimits:
    """Limits of a GPU by catalog name, alias or NVML name (``"NVIDIA H100 80GB HBM3"``)."""
    try:
        from ..hardware.catalog import load_gpu

        spec = load_gpu(name)
        limits = GpuLimits(spec.name, spec.peak_flops("bf16"), spec.mem_bandwidth_bytes_s, spec.memory_bytes,
                           f"hardware catalog: {spec.gpu_id}")
    except Exception:
        key = next((k for k in _FALLBACK_GPUS if k in name.lower()), None)
        if key is None:
            raise InputError("gpu", f"unknown GPU {name!r}", "a catalog GPU id or alias, e.g. H100, H200, A100") from None
        limits = _FALLBACK_GPUS[key]
    if memory_bytes:
        limits = replace(limits, memory_bytes=float(memory_bytes))
    return limits


@dataclass(frozen=True)
class PlanPoint:
    model: str
    layers: int
    batch: int
    prompt: int
    output: int
    source: str  # "azure", "grid" or "smoke"
    est_s: float = 0.0  # estimated wall time of the whole point (warm-up + repetitions)
    mem_bytes: float = 0.0  # estimated peak GPU memory


@dataclass
class Plan:
    gpu: GpuLimits
    budget_s: float
    idle_s: float
    repetitions: int
    min_window_s: float
    points: list[PlanPoint] = field(default_factory=list)
    model_fixed_s: dict[str, float] = field(default_factory=dict)  # build + warm-up per model
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    notes: list[str] = field(default_factory=list)

    @property
    def est_total_s(self) -> float:
        return STARTUP_S + self.idle_s + sum(self.model_fixed_s.values()) + sum(p.est_s for p in self.points)

    def models(self) -> list[str]:
        seen: list[str] = []
        for p in self.points:
            if p.model not in seen:
                seen.append(p.model)
        return seen


# ---- the estimate --------------------------------------------------------------------------------
def _act_bytes_per_token(spec: ModelSpec) -> float:
    """Activation bytes moved per token per layer in HF eager (reads + writes of the hidden state and the MLP)."""
    return (12 * spec.hidden_size + 4 * spec.intermediate_size) * spec.act_bits / 8


def _forward_s(spec: ModelSpec, gpu: GpuLimits, flops: float, bytes_: float) -> float:
    compute = flops / (gpu.peak_flops * COMPUTE_EFFICIENCY)
    memory = bytes_ / (gpu.mem_bandwidth_bytes_s * MEMORY_EFFICIENCY)
    return max(compute, memory) + spec.num_layers * LAYER_OVERHEAD_S + FORWARD_OVERHEAD_S


def prefill_seconds(spec: ModelSpec, gpu: GpuLimits, batch: int, prompt: int) -> float:
    """One forward over ``batch x prompt`` tokens (logits of the last position only)."""
    L, tokens = spec.num_layers, batch * prompt
    flops = (2 * tokens * L * spec.params_per_layer + 2 * batch * prompt * prompt * spec.q_size * L
             + 2 * batch * spec.hidden_size * spec.vocab_size)
    bytes_ = spec.weight_bytes + tokens * spec.kv_bytes_per_token + tokens * L * _act_bytes_per_token(spec)
    return _forward_s(spec, gpu, flops, bytes_)


def decode_seconds(spec: ModelSpec, gpu: GpuLimits, batch: int, prompt: int, output: int) -> float:
    """``output - 1`` forwards of ``batch`` tokens with a cache growing from ``prompt`` tokens."""
    steps = output - 1
    if steps < 1:
        return 0.0
    L = spec.num_layers
    context = prompt + steps / 2.0
    flops = 2 * batch * (L * spec.params_per_layer + spec.hidden_size * spec.vocab_size) + 4 * batch * context * spec.q_size * L
    # weights + KV read + the dynamic cache re-copies itself (read + write) every step
    bytes_ = spec.weight_bytes + 3 * batch * context * spec.kv_bytes_per_token + batch * L * _act_bytes_per_token(spec)
    return steps * _forward_s(spec, gpu, flops, bytes_)


def memory_bytes(spec: ModelSpec, batch: int, prompt: int, output: int) -> float:
    """Peak memory of a point: weights, the KV cache twice (cat copies), prefill activations, masks, logits."""
    act = batch * prompt * (4 * spec.hidden_size + 3 * spec.intermediate_size) * spec.act_bits / 8
    kv = 2 * batch * (prompt + output) * spec.kv_bytes_per_token
    mask = batch * prompt * prompt * 2
    logits = batch * spec.vocab_size * 4 * 2
    return spec.weight_bytes + kv + act + mask + logits + 1.0e9  # + CUDA context / allocator slack


def point_seconds(spec: ModelSpec, gpu: GpuLimits, batch: int, prompt: int, output: int, repetitions: int = 5,
                  min_window_s: float = DEFAULT_MIN_WINDOW_S) -> float:
    """Wall time of a whole point: one warm-up and ``repetitions`` measured repetitions of both phases."""
    pre = prefill_seconds(spec, gpu, batch, prompt)
    dec = decode_seconds(spec, gpu, batch, prompt, output)
    pre_window = pre * max(1, math.ceil(min_window_s / pre))
    dec_window = dec * max(1, math.ceil(min_window_s / dec)) if dec > 0 else 0.0
    return (2 * pre + dec) + repetitions * (pre_window + dec_window) + POINT_OVERHEAD_S  # warm-up: 2 prefills, 1 decode


def model_fixed_seconds(spec: ModelSpec) -> float:
    """Building a random-weight model on the GPU (module construction + init) and its first forward."""
    return 4.0 + spec.weight_bytes / 20e9 + 2.0


# ---- sources of points ---------------------------------------------------------------------------
def azure_csv_path() -> Path | None:
    return AZURE_BUNDLED if AZURE_BUNDLED.is_file() else None


def load_azure_pairs(path: str | Path | None = None) -> list[tuple[int, int]]:
    """(ContextTokens, GeneratedTokens) rows of the Azure conversation trace."""
    path = Path(path) if path else azure_csv_path()
    if path is None:
        return []
    with open(path, newline="") as fh:
        rows = csv.DictReader(line for line in fh if not line.startswith("#"))
        return [(int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in rows]


def _clip(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def candidates(hf_id: str, spec: ModelSpec, pairs: Sequence[tuple[int, int]], rng: random.Random,
               n_azure: int = 48) -> list[tuple[int, int, int, str]]:
    """(batch, prompt, output, source), Azure draws and the shuffled grid interleaved, duplicates dropped."""
    max_prompt = min(PROMPT_RANGE[1], spec.max_position_embeddings - OUTPUT_RANGE[1])
    azure = []
    for _ in range(n_azure if pairs else 0):
        p, o = pairs[rng.randrange(len(pairs))]
        azure.append((rng.choice(BATCHES), _clip(p, PROMPT_RANGE[0], max_prompt), _clip(o, *OUTPUT_RANGE), "azure"))
    grid = [(b, min(p, max_prompt), o, "grid") for b in GRID_BATCHES for p in GRID_PROMPTS for o in GRID_OUTPUTS]
    rng.shuffle(grid)
    out, seen = [], set()
    for k in range(max(len(azure), len(grid))):
        for source in (azure, grid):
            if k < len(source) and source[k][:3] not in seen:
                seen.add(source[k][:3])
                out.append(source[k])
    return out


def resolve_model(hf_id: str) -> ModelSpec:
    """The catalog's ModelSpec (bundled configs and their aliases); InputError naming ``models`` otherwise."""
    from ..models.catalog import load_model

    try:
        return load_model(hf_id)
    except InputError as exc:
        raise InputError("models", f"unknown model {hf_id!r}", "a bundled Hugging Face id (llmco2 catalog)") from exc


def parse_models(text: str | None) -> list[tuple[str, int | None]]:
    """``"meta-llama/Llama-3.1-8B,Qwen/Qwen3-32B:16"`` -> [(id, None), (id, 16)]."""
    if not text:
        return list(DEFAULT_MODELS)
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        hf_id, _, layers = item.partition(":")
        if layers:
            try:
                n = int(layers)
            except ValueError:
                raise InputError("models", f"bad layer count in {item!r}", "ID or ID:LAYERS with LAYERS >= 1") from None
            if n < 1:
                raise InputError("models", f"bad layer count in {item!r}", "ID or ID:LAYERS with LAYERS >= 1")
            out.append((hf_id.strip(), n))
        else:
            out.append((hf_id.strip(), None))
    if not out:
        raise InputError("models", "no model named", "comma-separated Hugging Face ids, optionally ID:LAYERS")
    return out


# ---- the plan ------------------------------------------------------------------------------------
def build_plan(budget_s: float, gpu: GpuLimits, models: Iterable[tuple[str, int | None]] = DEFAULT_MODELS,
               repetitions: int = 5, min_window_s: float = DEFAULT_MIN_WINDOW_S, idle_s: float = 5.0, seed: int = 0,
               pairs: Sequence[tuple[int, int]] | None = None,
               specs: dict[str, ModelSpec] | None = None) -> Plan:
    """Points per model in priority order until each model's share of the budget is spent.

    The budget left after start-up and the idle measurement is shared equally among the models still
    to plan; what a model does not use passes to the next. A point estimated above ``MAX_POINT_SHARE``
    of its model's share is skipped, so that one long point cannot crowd out the rest. Points that would not fit
    ``MEMORY_FRACTION`` of the GPU memory, or the model's context, are skipped (counted by reason).
    """
    if not budget_s > 0:
        raise InputError("budget-seconds", f"must be > 0, got {budget_s}")
    if repetitions < 1:
        raise InputError("repetitions", f"must be >= 1, got {repetitions}")
    models = list(models)
    plan = Plan(gpu=gpu, budget_s=budget_s, idle_s=idle_s, repetitions=repetitions, min_window_s=min_window_s)
    if pairs is None:
        pairs = load_azure_pairs()
        if not pairs:
            plan.notes.append("Azure conversation trace not found: grid points only")
    remaining = budget_s - STARTUP_S - idle_s
    rng = random.Random(seed)
    specs = dict(specs or {})
    for k, (hf_id, layers) in enumerate(models):
        if hf_id not in specs:
            try:
                specs[hf_id] = resolve_model(hf_id)
            except InputError as exc:
                plan.notes.append(f"skipped {hf_id}: {exc}")
                plan.skipped["unknown model"] = plan.skipped.get("unknown model", 0) + 1
                continue
        full = specs[hf_id]
        n_layers = min(layers or full.num_layers, full.num_layers)
        spec = full.with_layers(n_layers)
        share = remaining / (len(models) - k)
        fixed = model_fixed_seconds(spec)
        if spec.weight_bytes + 1.0e9 > gpu.memory_bytes * MEMORY_FRACTION:
            plan.notes.append(f"skipped {hf_id} ({n_layers} layers): weights do not fit {gpu.name}")
            plan.skipped["model memory"] = plan.skipped.get("model memory", 0) + 1
            continue
        used = 0.0
        chosen: list[PlanPoint] = []
        for batch, prompt, output, source in candidates(hf_id, spec, pairs, rng):
            mem = memory_bytes(spec, batch, prompt, output)
            if mem > gpu.memory_bytes * MEMORY_FRACTION:
                plan.skipped["memory"] = plan.skipped.get("memory", 0) + 1
                continue
            est = point_seconds(spec, gpu, batch, prompt, output, repetitions, min_window_s)
            if est > MAX_POINT_SHARE * share:
                plan.skipped["point too long"] = plan.skipped.get("point too long", 0) + 1
                continue
            if fixed + used + est > share:
                plan.skipped["budget"] = plan.skipped.get("budget", 0) + 1
                continue
            chosen.append(PlanPoint(hf_id, n_layers, batch, prompt, output, source, est, mem))
            used += est
        if chosen:
            plan.points.extend(chosen)
            plan.model_fixed_s[hf_id] = fixed
            remaining -= fixed + used
    return plan


def smoke_plan(repetitions: int = 5, min_window_s: float = 0.01) -> Plan:
    """The CPU smoke run: a tiny 2-layer model (hidden 64) through every code path."""
    plan = Plan(gpu=CPU_LIMITS, budget_s=60.0, idle_s=0.2, repetitions=repetitions, min_window_s=min_window_s)
    spec = smoke_spec()
    for batch, prompt, output in ((1, 16, 4), (2, 32, 8), (4, 8, 1)):
        plan.points.append(PlanPoint(spec.name, spec.num_layers, batch, prompt, output, "smoke",
                                     point_seconds(spec, CPU_LIMITS, batch, prompt, output, repetitions, min_window_s),
                                     memory_bytes(spec, batch, prompt, output)))
    plan.model_fixed_s[spec.name] = 1.0
    return plan


def smoke_spec() -> ModelSpec:
    return ModelSpec(name="smoke/llama-tiny", model_type="llama", hidden_size=64, intermediate_size=128, num_layers=2,
                     num_heads=4, num_kv_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=512,
                     source="built-in smoke config")


def format_plan(plan: Plan) -> str:
    """The human plan printed by ``--dry-run``."""
    lines = [
        f"# plan for {plan.gpu.name} ({plan.gpu.source}): {len(plan.points)} points over {len(plan.models())} models, "
        f"{plan.repetitions} repetitions each, min window {plan.min_window_s:g} s",
        f"# estimated time {plan.est_total_s:.0f} s of a {plan.budget_s:.0f} s budget "
        f"(start-up {STARTUP_S:.0f} s, idle {plan.idle_s:g} s, model builds {sum(plan.model_fixed_s.values()):.0f} s)",
    ]
    if plan.skipped:
        lines.append("# candidates skipped: " + ", ".join(f"{k} {v}" for k, v in sorted(plan.skipped.items())))
    lines += [f"# note: {n}" for n in plan.notes]
    header = ("model", "layers", "batch", "prompt", "output", "source", "est_s", "mem_gb")
    rows = [(p.model, str(p.layers), str(p.batch), str(p.prompt), str(p.output), p.source, f"{p.est_s:.2f}",
             f"{p.mem_bytes / 1e9:.1f}") for p in plan.points]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, *rows):
        lines.append("  ".join(c.ljust(widths[i]) if i in (0, 5) else c.rjust(widths[i]) for i, c in enumerate(r)))
    for model in plan.models():
        pts = [p for p in plan.points if p.model == model]
        lines.append(f"# {model}: {len(pts)} points, {sum(p.est_s for p in pts) + plan.model_fixed_s.get(model, 0):.0f} s")
    return "\n".join(lines)
