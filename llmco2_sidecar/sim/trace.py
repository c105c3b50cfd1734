"""The Azure LLM inference trace 2023 (conversation), bundled as ``llmco2_sidecar/data/azure_conv_2023.csv``
(provenance and CC-BY-4.0 attribution in ``data/SOURCE.md``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import InputError

BUNDLED_CONV = Path(__file__).resolve().parents[1] / "data" / "azure_conv_2023.csv"


@dataclass(frozen=True)
class TraceRequest:
    """One request of the trace: arrival (seconds after the trace's first request), token counts."""

    request_id: str
    arrival_s: float
    prompt_tokens: int
    output_tokens: int


def _parse_ts(text: str) -> float:
    # "2023-11-16 18:15:46.6805900": 7 fractional digits; the trace's clock is taken as UTC
    day, _, frac = text.strip().partition(".")
    base = datetime.strptime(day, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


def load_azure_conv(path: str | Path | None = None, minutes: float | None = None,
                    max_requests: int | None = None) -> tuple[list[TraceRequest], float]:
    """Requests arriving in the first ``minutes`` of the trace; returns (requests, epoch of the first)."""
    p = Path(path) if path else BUNDLED_CONV
    if minutes is not None and not (minutes > 0):
        raise InputError("minutes", f"must be positive, got {minutes!r}", "> 0")
    try:
        fh = open(p, newline="")
    except OSError as exc:
        raise InputError("trace", f"cannot read {p}: {exc.strerror}") from None
    out: list[TraceRequest] = []
    t0 = None
    with fh:
        reader = csv.DictReader(fh)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise InputError("trace", f"{p} lacks the columns {sorted(missing)}")
        for i, row in enumerate(reader):
            ts = _parse_ts(row["TIMESTAMP"])
            t0 = ts if t0 is None else t0
            arrival = ts - t0
            if minutes is not None and arrival > minutes * 60:
                break
            prompt, output = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            if prompt < 1 or output < 1:
                continue  # a request without prompt or output cannot be scheduled
            out.append(TraceRequest(f"azure-conv-{i}", arrival, prompt, output))
            if max_requests is not None and len(out) >= max_requests:
                break
    return out, (t0 or 0.0)
