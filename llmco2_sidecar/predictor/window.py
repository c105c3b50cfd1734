"""The steady state behind an aggregate ML.ENERGY row, as weighted engine steps.

An ML.ENERGY row gives energy per output token of a saturated vLLM server at an average running
batch ``b``. To train a per-step model on it we rebuild the steady state explicitly:

* ``b`` slots (``round(avg_batch_size)``) each hold one running request. A request in flight at a
  random step is length-biased (probability proportional to its output length ``L``, drawn from the
  row's histogram) and its age (tokens generated so far) is uniform in ``0..L-1``; its context is
  ``prompt + age``.
* A slot starts a new request with probability ``h = 1 / mean(L)`` per step (renewal rate), whose
  whole prompt is prefilled in that step (vLLM's chunked prefill budget,
  ``max_num_batched_tokens = 8192``, caps it).
* Prompt lengths are lognormal with the task's published mean (634 tokens for lm-arena-chat, 224
  for gpqa) and the log-spread of the Azure 2023 conversation trace (sigma = 0.985, computed from
  ``azure_llm_inference_trace_2023/data/AzureLLMInferenceTrace_conv.csv``), clipped to [4, 8192].
* Steps are stratified: ``k_decode`` decode-only steps share the probability ``1 - q`` and
  ``k_prefill`` steps with at least one prefill share ``q = 1 - (1 - h)^b`` (number of prefills
  binomial, conditioned on >= 1). The window's mean step energy is the weighted sum of the step
  energies, an unbiased estimate with far fewer graphs than a long simulated run.
* Every step emits one token per running request, so a step lasts ``b / throughput`` (observed), and
  energy per output token = mean step energy / ``b``. A source that measures the step time itself
  (ML.ENERGY v2's time per output token) gives ``observed_step_s`` and ``tokens_per_step`` =
  throughput x step time instead (:mod:`.mlenergy_v2`), and its own prompt spread and cap.

The sum is linear in the step energies, so a model trains through it (loss on the row).

Step times: by default every step of a window lasts the row's mean step time. With
:func:`spread_step_times` (``step_times="roofline"``) a step lasts its own Roofline time plus the
window's constant overhead, ``t_i = r_i + (T - sum_j w_j r_j)``, so that the weighted mean is still the
observed ``T`` while a step with a long prefill lasts longer than a decode-only one (with uniform times
such a step can be asked for more than the GPUs' power limit over its share of the time). With
``step_times="kernel"`` the same spread starts from the step's kernel time instead, its compute-bound
kernels at the GPU's measured GEMM efficiency (the duration model's ``kernel`` base), so a step carrying a
prefill chunk lasts longer still. Tried, used by neither shipped model: against ML.ENERGY v3's published
inter-token latencies it brings the p99's median error closer but every quantile's MAPE further off
(``benchmarks/results/step_times.md``, part 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..workload import StepBatch
from .mlenergy import MLEnergyRow, output_length_sampler

#: Log-standard deviation of prompt lengths (Azure 2023 conversation trace, ContextTokens).
PROMPT_LOG_SIGMA = 0.985
#: vLLM 0.11 default token budget per step for the OpenAI server on >= 70 GiB GPUs.
MAX_BATCHED_TOKENS = 8192


@dataclass
class SteadyWindow:
    """Weighted steps standing for one steady state.

    Attributes:
        steps: the sampled engine steps (observed durations set).
        weight: float64 [S], probability weight of each step (sums to 1).
        tokens_per_step: output tokens a step emits on average (the running batch).
        target_j_per_token: the measured energy per output token for the replica, in J.
    """

    steps: StepBatch
    weight: np.ndarray
    tokens_per_step: float
    target_j_per_token: float

    def energy_per_token(self, step_energy_j: np.ndarray) -> float:
        return float(np.dot(self.weight, step_energy_j) / self.tokens_per_step)


def sample_prompts(mean_tokens: float, rng: np.random.Generator, n: int, cap: int = MAX_BATCHED_TOKENS,
                   sigma: float = PROMPT_LOG_SIGMA) -> np.ndarray:
    """Lognormal prompt lengths with the given mean and log-spread (default :data:`PROMPT_LOG_SIGMA`)."""
    mu = np.log(mean_tokens) - sigma**2 / 2
    x = rng.lognormal(mu, sigma, size=n)
    return np.clip(np.round(x), 4, cap).astype(np.int64)


def _in_flight(row: MLEnergyRow, rng: np.random.Generator, n: int) -> np.ndarray:
    """Contexts of ``n`` requests in flight at a random step (length-biased, uniform age)."""
    pool = output_length_sampler(row, rng, 4096)
    lengths = rng.choice(pool, size=n, p=pool / pool.sum())
    age = np.floor(rng.random(n) * lengths).astype(np.int64)
    return _prompts(row, rng, n) + age


def _prompts(row: MLEnergyRow, rng: np.random.Generator, n: int) -> np.ndarray:
    sigma = row.prompt_log_sigma if row.prompt_log_sigma is not None else PROMPT_LOG_SIGMA
    return sample_prompts(row.prompt_mean_tokens, rng, n, cap=row.max_prompt_tokens or MAX_BATCHED_TOKENS, sigma=sigma)


def _n_prefills(b: int, h: float, rng: np.random.Generator) -> int:
    """Binomial(b, h) conditioned on >= 1."""
    k = np.arange(1, b + 1)
    logp = (
        np.array([0.0])
        if b == 1
        else np.cumsum(np.log(b - k + 1) - np.log(k))  # log C(b, k)
    ) + k * np.log(h) + (b - k) * np.log1p(-h)
    p = np.exp(logp - logp.max())
    return int(rng.choice(k, p=p / p.sum()))


def steady_window(row: MLEnergyRow, seed: int = 0, k_decode: int = 4, k_prefill: int = 4) -> SteadyWindow:
    """Rebuild the steady state of ``row`` as ``k_decode + k_prefill`` weighted steps (deterministic
    for a seed)."""
    rng = np.random.default_rng(seed)
    b = max(1, int(round(row.avg_batch_size)))
    mean_len = max(1.0, float(row.avg_output_len))
    h = min(1.0, 1.0 / mean_len)
    q = 1.0 - (1.0 - h) ** b
    idx, ctx, new = [], [], []
    weight = []
    s = 0
    for _ in range(k_decode):
        c = _in_flight(row, rng, b)
        idx.append(np.full(b, s)); ctx.append(c); new.append(np.ones(b, dtype=np.int64))
        weight.append((1.0 - q) / k_decode)
        s += 1
    for _ in range(k_prefill):
        n_pre = _n_prefills(b, h, rng) if h < 1 else b
        prompts = _prompts(row, rng, n_pre)
        budget = max(row.max_prompt_tokens or MAX_BATCHED_TOKENS, MAX_BATCHED_TOKENS) - (b - n_pre)
        # the scheduler fills the budget in order; a later prompt gets what is left (a chunk)
        cum = np.cumsum(prompts)
        prompts = np.where(cum <= budget, prompts, np.maximum(1, budget - (cum - prompts)))
        prompts = np.maximum(prompts, 1)
        c = _in_flight(row, rng, b - n_pre)
        idx.append(np.full(b, s))
        ctx.append(np.concatenate([np.zeros(n_pre, dtype=np.int64), c]))
        new.append(np.concatenate([prompts, np.ones(b - n_pre, dtype=np.int64)]))
        weight.append(q / k_prefill)
        s += 1
    steps = StepBatch(
        request_step=np.concatenate(idx).astype(np.int64),
        context_tokens=np.concatenate(ctx).astype(np.int64),
        new_tokens=np.concatenate(new).astype(np.int64),
        duration_s=np.full(s, row.step_duration_s),
    )
    steps.validate()
    w = np.asarray(weight, dtype=np.float64)
    tokens = row.tokens_per_step if row.tokens_per_step is not None else float(row.avg_batch_size)
    return SteadyWindow(steps=steps, weight=w / w.sum(), tokens_per_step=tokens, target_j_per_token=row.energy_per_token_j)


#: How a window's steps share its observed mean step time (see the module docstring).
STEP_TIMES = ("uniform", "roofline", "kernel")


def spread_step_times(mean_step_s: float, weight: np.ndarray, roofline_s: np.ndarray) -> np.ndarray:
    """Per-step durations with the weighted mean ``mean_step_s``: each step's Roofline time plus the
    window's constant overhead ``mean_step_s - sum(weight x roofline_s)``; where the Roofline times alone
    exceed the observed mean (a faster GPU than its datasheet: never seen), scaled down to it instead."""
    w = np.asarray(weight, dtype=np.float64) / np.sum(weight)
    r = np.asarray(roofline_s, dtype=np.float64)
    mean_r = float(w @ r)
    if mean_r <= 0:
        return np.full(r.shape, float(mean_step_s))
    if mean_step_s >= mean_r:
        return r + (mean_step_s - mean_r)
    return r * (mean_step_s / mean_r)
