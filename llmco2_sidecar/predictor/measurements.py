"""The project's own per-batch measurements (``data/measurements/*.csv`` from ``llmco2 profile``).

Schema (one row per measured static batch; energies summed over the ``tp`` GPUs)::

    gpu_name, driver, torch_version, model, layers, batch, prompt, output, tp,
    prefill_j, decode_j, prefill_s, decode_s, idle_w, repetitions, spread

A row gives the prefill and decode labels directly: the prefill is one engine step of ``batch``
prompts of ``prompt`` tokens (``prefill_j`` over ``prefill_s``); the decode is ``output - 1`` steps
of ``batch`` decodes with context ``prompt + i`` (``decode_j`` over ``decode_s``, split evenly in
time). ``layers`` smaller than the model's depth means the model was truncated to fit the GPU.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..workload import StepBatch

COLUMNS = ("gpu_name", "driver", "torch_version", "model", "layers", "batch", "prompt", "output", "tp",
           "prefill_j", "decode_j", "prefill_s", "decode_s", "idle_w", "repetitions", "spread")


@dataclass(frozen=True)
class MeasuredBatch:
    """One measured static batch (see module docstring); energies in J, times in s."""

    gpu_name: str
    model: str
    layers: int
    batch: int
    prompt: int
    output: int
    tp: int
    prefill_j: float
    decode_j: float
    prefill_s: float
    decode_s: float
    idle_w: float
    repetitions: int
    spread: float
    driver: str = ""
    torch_version: str = ""
    source_file: str = ""

    @property
    def key(self) -> str:
        return f"{self.model}|{self.gpu_name}|L{self.layers}|tp{self.tp}|b{self.batch}|p{self.prompt}|o{self.output}"

    def prefill_steps(self) -> StepBatch:
        """The prefill as one step of ``batch`` prompts, with its observed duration."""
        b = self.batch
        return StepBatch(np.zeros(b, np.int64), np.zeros(b, np.int64), np.full(b, self.prompt, np.int64),
                         np.array([self.prefill_s]))

    def decode_steps(self, k: int = 4) -> tuple[StepBatch, np.ndarray]:
        """``min(k, output-1)`` decode steps spread evenly over the ``output - 1`` decode steps, and the
        weight of each (how many real steps it stands for)."""
        n = self.output - 1
        if n < 1:
            raise ValueError("a batch with output 1 has no decode step")
        k = min(k, n)
        # midpoints of k equal slices of the decode positions 0..n-1
        pos = np.floor((np.arange(k) + 0.5) * n / k).astype(np.int64)
        b = self.batch
        steps = StepBatch(
            request_step=np.repeat(np.arange(k, dtype=np.int64), b),
            context_tokens=np.repeat(self.prompt + pos, b).astype(np.int64),  # KV holds prompt + i tokens
            new_tokens=np.ones(k * b, dtype=np.int64),
            duration_s=np.full(k, self.decode_s / n),
        )
        return steps, np.full(k, n / k)


def _num(row: dict, key: str, cast, path: Path, line: int):
    try:
        return cast(row[key])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{path.name}:{line}:{key}", f"missing or not a number: {row.get(key)!r}") from None


def read_measurements(folder: str | Path) -> list[MeasuredBatch]:
    """Every ``*.csv`` in ``folder`` (none -> empty list; plan files such as ``next_plan.csv`` skipped). Bad rows raise :class:`InputError`
    naming the file, line and column; rows with non-positive energies or times are rejected too."""
    root = Path(folder)
    if not root.is_dir():
        return []
    out: list[MeasuredBatch] = []
    for path in sorted(root.glob("*.csv")):
        with path.open(newline="") as fh:
            lines = fh.read().splitlines()
            skip = 0  # the harness's "# provenance: ..." line(s) come before the header
            while skip < len(lines) and lines[skip].startswith("#"):
                skip += 1
            reader = csv.DictReader(lines[skip:])
            if {"priority", "reason"} <= set(reader.fieldnames or []):
                continue  # a measurement plan (next_plan.csv), not measurements
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(path.name, f"missing columns {missing}", ", ".join(COLUMNS))
            for i, row in enumerate(reader, start=skip + 2):
                m = MeasuredBatch(
                    gpu_name=row["gpu_name"].strip(), model=row["model"].strip(),
                    layers=_num(row, "layers", int, path, i), batch=_num(row, "batch", int, path, i),
                    prompt=_num(row, "prompt", int, path, i), output=_num(row, "output", int, path, i),
                    tp=_num(row, "tp", int, path, i), prefill_j=_num(row, "prefill_j", float, path, i),
                    decode_j=_num(row, "decode_j", float, path, i), prefill_s=_num(row, "prefill_s", float, path, i),
                    decode_s=_num(row, "decode_s", float, path, i), idle_w=_num(row, "idle_w", float, path, i),
                    repetitions=_num(row, "repetitions", int, path, i), spread=_num(row, "spread", float, path, i),
                    driver=row.get("driver", ""), torch_version=row.get("torch_version", ""), source_file=path.name,
                )
                for name in ("layers", "batch", "prompt", "output", "tp"):
                    if getattr(m, name) < 1:
                        raise InputError(f"{path.name}:{i}:{name}", "must be >= 1")
                if m.prefill_j <= 0 or m.prefill_s <= 0 or (m.output > 1 and (m.decode_j <= 0 or m.decode_s <= 0)):
                    raise InputError(f"{path.name}:{i}", "energies and durations must be positive")
                out.append(m)
    return out
