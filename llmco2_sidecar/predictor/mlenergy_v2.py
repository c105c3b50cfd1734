"""ML.ENERGY leaderboard v2 rows (vLLM 0.4.2 on A100-SXM4-40GB and H100) as :class:`MLEnergyRow`.

v2 publishes one JSON file per configuration (``bs{max_num_seqs}+tp{TP}+pp{PP}.json``): steady-state
GPU energy per request, the mean time per output token (``Avg TPOT``, mean over engine iterations),
output throughput, the mean output length and the mean running batch of a saturated server (see the
SOURCE.md of the data). We rebuild each row like a v3 row (:mod:`.window`), with three differences
that the data impose:

* **Step duration** = the measured ``Avg TPOT`` (the observed step duration), and the tokens a step
  emits = ``throughput x TPOT`` so that the window's mean step energy / tokens per step equals the
  measured energy per output token at the measured power (J/token = W / throughput).
* **Output lengths**: v2 publishes only the mean (the client caps outputs at ``max_tokens = 1024``).
  We ASSUME a truncated exponential on [1, 1024] with the row's mean (:func:`synthetic_histogram`).
* **Prompt lengths**: the chat task's 500 ShareGPT first turns (bundled beside the rows), sent with
  the client's system prompt. No tokenizer is available offline, so tokens are APPROXIMATED as
  characters / 4 plus 40 tokens of system prompt and chat template (:func:`chat_prompt_stats`).
  vLLM 0.4.2 did not chunk prefills, so the prompt cap is the model length, not 8192.

Only the chat task is used: the code task's prompts are not published. Rows with PP > 1 are left out
(the window models one pipeline stage per step).
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import InputError
from .mlenergy import MLEnergyRow

SOURCE_V2 = "mlenergy-v2"
TASK_V2_CHAT = "sharegpt-chat"
#: v2 GPU names -> ML.ENERGY short names used across sources (and :data:`.mlenergy.GPU_NAMES`).
GPU_SHORT = {"NVIDIA A100-SXM4-40GB": "A100", "A100-SXM4-40GB": "A100", "NVIDIA H100 80GB HBM3": "H100",
             "H100 80GB HBM3": "H100"}
#: The benchmark client's ``max_tokens`` (benchmark_client.py).
MAX_OUTPUT_TOKENS = 1024
#: Tokens of the client's system prompt and the chat template around a user turn (approximation).
TEMPLATE_TOKENS = 40
CHARS_PER_TOKEN = 4.0
#: MoE models in v2 (no ``architecture`` field is published).
_MOE = re.compile(r"mixtral", re.I)


@lru_cache(maxsize=4)
def chat_prompt_stats(prompts_file: str) -> tuple[float, float]:
    """``(mean tokens, log-sigma)`` of the chat prompts (approximate tokens, see module docstring)."""
    doc = json.loads(Path(prompts_file).read_text())
    toks = np.array([len(c["conversations"][0]["value"].strip()) / CHARS_PER_TOKEN + TEMPLATE_TOKENS for c in doc])
    return float(toks.mean()), float(np.log(toks).std())


def synthetic_histogram(mean: float, cap: int = MAX_OUTPUT_TOKENS, bins: int = 50) -> tuple[tuple[float, ...], tuple[int, ...]]:
    """Histogram (51 edges, 50 counts) of a truncated exponential on [1, cap] with the given mean.

    The rate ``lam`` solves ``E[X] = mean`` (``lam < 0`` gives a rising density when the mean is above
    the midpoint); counts are the bin probabilities x 1e6, rounded."""
    mean = float(min(max(mean, 1.5), cap - 0.5))
    lo, hi = 1.0, float(cap)

    def trunc_mean(lam: float) -> float:
        if abs(lam) < 1e-9:
            return (lo + hi) / 2
        x = np.linspace(lo, hi, 4001)
        w = np.exp(-lam * (x - lo))
        return float((x * w).sum() / w.sum())

    a, b = -0.05, 1.0  # trunc_mean decreases in lam
    for _ in range(80):
        m = (a + b) / 2
        if trunc_mean(m) > mean:
            a = m
        else:
            b = m
    lam = (a + b) / 2
    edges = np.linspace(lo, hi, bins + 1)
    cdf = (1 - np.exp(-lam * (edges - lo))) if abs(lam) > 1e-9 else (edges - lo)
    p = np.diff(cdf) / (cdf[-1] - cdf[0])
    counts = np.maximum(np.round(p * 1e6), 0).astype(int)
    return tuple(float(e) for e in edges), tuple(int(c) for c in counts)


def load_v2_rows(data_dir: str | Path) -> list[MLEnergyRow]:
    """Read ``chat/<GPU>/<org>/<model>/bs*+tp*+pp*.json`` under ``data_dir`` (the v2
    ``data/llm_text_generation`` folder or the bundled copy), with ``sharegpt/*.json`` beside it for
    the prompt lengths. Raises :class:`InputError` when there is no row."""
    root = Path(data_dir)
    chat = root / "chat"
    prompts = sorted((root / "sharegpt").glob("*.json")) or sorted(root.glob("**/ShareGPT*.json"))
    files = sorted(chat.glob("*/*/*/*.json"))
    if not files or not prompts:
        raise InputError("data", f"no ML.ENERGY v2 chat rows or ShareGPT prompts under {root}",
                         "a folder with chat/<GPU>/<org>/<model>/*.json and sharegpt/*.json")
    p_mean, p_sigma = chat_prompt_stats(str(prompts[0]))
    rows = []
    for f in files:
        d = json.loads(f.read_text())
        model_id = str(d["Model"])
        out_len = float(d["Avg Output Tokens"])
        tput = float(d["Token tput (tok/s)"])
        tpot = float(d["Avg TPOT (s)"])
        e_tok = float(d["Energy/req (J)"]) / out_len
        edges, counts = synthetic_histogram(out_len)
        seqs = int(re.match(r"bs(\d+)", f.name).group(1))
        rows.append(MLEnergyRow(
            model_id=model_id, task=TASK_V2_CHAT, gpu=GPU_SHORT.get(str(d["GPU"]), str(d["GPU"])),
            num_gpus=int(d["TP"]) * int(d.get("PP", 1)), tp=int(d["TP"]), dp=1,
            weight_precision="bfloat16", architecture="MoE" if _MOE.search(model_id) else "Dense Transformer",
            max_num_seqs=seqs, avg_batch_size=float(d["Avg BS (reqs)"]), avg_output_len=out_len,
            energy_per_token_j=e_tok, avg_power_w=e_tok * tput, output_tokens_per_s=tput,
            hist_edges=edges, hist_counts=counts, source=SOURCE_V2, pp=int(d.get("PP", 1)),
            observed_step_s=tpot, tokens_per_step=tput * tpot, prompt_mean=p_mean, prompt_log_sigma=p_sigma,
            max_prompt_tokens=8192, file=str(f.relative_to(root)),
        ))
    return rows
