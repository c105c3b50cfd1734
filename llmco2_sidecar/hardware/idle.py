"""Idle power per GPU from cited public readings (``idle_readings.csv``), by one stated rule.

The catalog's ``idle_w`` (bare idle, no CUDA context) and ``idle_ctx_w`` (idle with a CUDA context: a
loaded serving engine between steps) are derived from the readings file by :func:`idle_from_readings`;
``tests/hardware/test_idle_readings.py`` recomputes the rule for every catalog GPU and fails when
``catalog.toml`` disagrees, so the two cannot drift. ``python -m llmco2_sidecar.hardware.idle`` prints
what the rule gives next to what the catalog holds; ``--write`` rewrites those catalog lines.

The rule (also in SOURCE.md, "Idle power from public readings"):

* A reading is one host's snapshot: a multi-GPU nvidia-smi table is entered once, as the median of
  the GPUs shown. Only readings with GPU utilisation 0 % are admitted (the file is rejected otherwise).
* ``context``: ``none`` = no process holds the GPU (bare idle); ``cuda`` = a process holds memory at
  0 % utilisation (idle with a context); ``unknown`` = not stated. Unknown readings never enter a
  median: the two states differ by 26-66 W (Vadari, arXiv 2605.23918), as much as the spread the
  readings are meant to remove, so a reading of unknown state cannot be assigned to either. They
  stay in the file as cross-checks (decided before computing any figure).
* ``idle_w``: >= 2 bare readings -> their median; 1 -> that reading (low confidence); 0 -> the
  0.12 x TDP assumption, flagged ASSUMED.
* ``idle_ctx_w``: >= 2 context readings -> their median; 1 -> that reading (low confidence);
  0 -> ``idle_w`` + the CUDA-context step (:func:`context_step_w`).
* The project's own readings (``llmco2 profile`` on a lent GPU; ``source_url`` = the measurement file,
  ``data/measurements/<file>.csv``; :mod:`.idle_measured`) replace the public readings of their GPU and
  context: their window, GPU state and process list are known, a pasted nvidia-smi table's are not.
  ``python -m llmco2_sidecar.hardware.idle --add-measured FILE`` appends them.
* Figures are rounded to 0.1 W. A context figure below the bare figure is an error in the data.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

READINGS = Path(__file__).with_name("idle_readings.csv")
#: ``source_url`` prefix of the project's own readings (a measurement file in the repository)
OWN_PREFIX = "data/measurements/"
CONTEXTS = ("none", "cuda", "unknown")
FIELDS = ("gpu", "watts", "context", "perf_state", "util_pct", "memory_used_mib", "power_cap_w",
          "source_url", "date", "note")

#: Fraction of TDP assumed for bare idle where no public reading exists.
ASSUMED_IDLE_FRACTION = 0.12
#: CUDA-context step over bare idle, in W (Vadari, arXiv 2605.23918, 2026): +26-50 W on the HBM parts
#: measured (H100, A100; the middle of the range is used), +66 W on the GDDR6 L40S.
CONTEXT_STEP_HBM_W = 38.0
CONTEXT_STEP_GDDR6_W = 66.0
GDDR6_REFERENCE_TDP_W = 350.0  # the L40S, where the GDDR6 step was measured


@dataclass(frozen=True)
class IdleReading:
    """One public idle-power reading of one host (a row of ``idle_readings.csv``).

    Attributes:
        gpu: catalog GPU id.
        watts: power draw per GPU, in W (the median of the GPUs shown for a multi-GPU table).
        context: ``none`` (bare idle), ``cuda`` (a process holds the GPU at 0 % utilisation) or ``unknown``.
        perf_state: performance state shown (``P0``, ``P8``), or "".
        util_pct: GPU utilisation shown, in %, or None where the source shows none.
        memory_used_mib: memory in use, in MiB, or None.
        power_cap_w: the power limit shown (identifies the variant), in W, or None.
        source_url: where the reading was published.
        date: date of the post or of the recorded output (ISO, may be partial or "").
        note: how the figure was read.
    """

    gpu: str
    watts: float
    context: str
    perf_state: str
    util_pct: float | None
    memory_used_mib: float | None
    power_cap_w: float | None
    source_url: str
    date: str
    note: str


@dataclass(frozen=True)
class IdleFigures:
    """What the rule gives for one GPU: the catalog's four idle fields plus the counts behind them."""

    idle_w: float
    idle_w_source: str
    idle_ctx_w: float
    idle_ctx_w_source: str
    n_bare: int
    n_ctx: int
    n_unknown: int


def _optional_float(value: str, field: str) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise InputError(field, f"not a number: {value!r}") from None


def load_readings(path: str | Path = READINGS) -> list[IdleReading]:
    """The readings file, validated (a bad row raises :class:`InputError` naming row and field)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != FIELDS:
            raise InputError("idle_readings.header", f"got {reader.fieldnames}", ", ".join(FIELDS))
        rows = list(reader)
    out = []
    for i, row in enumerate(rows, start=2):  # line 1 is the header
        where = f"idle_readings line {i}"
        if None in row or any(v is None for v in row.values()):
            raise InputError(where, "wrong number of columns", ", ".join(FIELDS))
        watts = _optional_float(row["watts"], f"{where}.watts")
        if watts is None or not watts > 0:
            raise InputError(f"{where}.watts", f"must be a positive number, got {row['watts']!r}")
        context = row["context"].strip()
        if context not in CONTEXTS:
            raise InputError(f"{where}.context", f"got {context!r}", ", ".join(CONTEXTS))
        util = _optional_float(row["util_pct"], f"{where}.util_pct")
        if util is not None and util > 0:
            raise InputError(f"{where}.util_pct", f"{util:g} %: a GPU doing work is not idle", "0 or empty")
        if context != "unknown" and util is None:
            raise InputError(f"{where}.util_pct", "a reading whose context is known must show 0 % utilisation", "0")
        if not row["source_url"].strip().startswith(("http://", "https://", OWN_PREFIX)):
            raise InputError(f"{where}.source_url", f"got {row['source_url']!r}",
                             f"an http(s) address, or {OWN_PREFIX}<file>.csv for our own measurement")
        out.append(IdleReading(
            gpu=row["gpu"].strip(), watts=watts, context=context, perf_state=row["perf_state"].strip(),
            util_pct=util, memory_used_mib=_optional_float(row["memory_used_mib"], f"{where}.memory_used_mib"),
            power_cap_w=_optional_float(row["power_cap_w"], f"{where}.power_cap_w"),
            source_url=row["source_url"].strip(), date=row["date"].strip(), note=row["note"].strip(),
        ))
    return out


def context_step_w(architecture: str, tdp_w: float) -> tuple[float, str]:
    """The CUDA-context step over bare idle used where no context reading exists: (W, source text)."""
    if architecture.lower().startswith("ada"):
        step = round(CONTEXT_STEP_GDDR6_W * min(1.0, tdp_w / GDDR6_REFERENCE_TDP_W), 1)
        if tdp_w >= GDDR6_REFERENCE_TDP_W:
            return step, "the CUDA-context step of the GDDR6 L40S measured by Vadari, arXiv 2605.23918 (2026)"
        return step, (f"ASSUMED: the L40S's {CONTEXT_STEP_GDDR6_W:g} W CUDA-context step (Vadari, arXiv "
                      f"2605.23918) scaled by TDP ({CONTEXT_STEP_GDDR6_W:g} x {tdp_w:g}/"
                      f"{GDDR6_REFERENCE_TDP_W:g} = {step:g} W); no measurement of this GPU published")
    return CONTEXT_STEP_HBM_W, ("the CUDA-context step of HBM parts measured by Vadari, arXiv 2605.23918 (2026; "
                                "+26-50 W on H100/A100, middle of the range; ASSUMED the same on other HBM parts)")


def _fmt(w: float) -> str:
    return f"{w:g}"


def is_own(reading: IdleReading) -> bool:
    """A reading this project measured (its source is a measurement file in the repository)."""
    return reading.source_url.startswith(OWN_PREFIX)


def _pick(readings: list[IdleReading], context: str) -> tuple[list[float], bool]:
    """The watts that count for ``context``: our own readings where there are any, else the public ones."""
    own = [r.watts for r in readings if r.context == context and is_own(r)]
    return (own, True) if own else ([r.watts for r in readings if r.context == context], False)


def _own(values: Sequence[float], what: str) -> tuple[float, str]:
    med = round(statistics.median(values), 1)
    runs = "one run" if len(values) == 1 else f"median of {len(values)} runs"
    return med, f"MEASURED by this project ({what}; llmco2 profile, {runs}); see idle_readings.csv"


def _measured(values: Sequence[float], what: str) -> tuple[float, str]:
    if len(values) == 1:
        return round(values[0], 1), (f"MEASURED: single public reading ({what}), low confidence; "
                                     "see idle_readings.csv")
    med = round(statistics.median(values), 1)
    return med, (f"MEASURED: median of {len(values)} public readings ({what}; range {_fmt(min(values))}-"
                 f"{_fmt(max(values))} W); see idle_readings.csv")


def idle_from_readings(readings: Iterable[IdleReading], tdp_w: float, architecture: str) -> IdleFigures:
    """``idle_w`` / ``idle_ctx_w`` and their source texts for one GPU from its readings (rule above)."""
    readings = list(readings)
    if len({r.gpu for r in readings}) > 1:
        raise InputError("readings", f"mix GPUs {sorted({r.gpu for r in readings})}", "one GPU's readings")
    if not (tdp_w > 0 and math.isfinite(tdp_w)):
        raise InputError("tdp_w", f"must be positive, got {tdp_w!r}")
    bare, own_bare = _pick(readings, "none")
    ctx, own_ctx = _pick(readings, "cuda")
    n_unknown = sum(r.context == "unknown" for r in readings)
    unknown_note = (f"; {n_unknown} reading{'s' if n_unknown > 1 else ''} of unknown context in "
                    "idle_readings.csv not counted" if n_unknown else "")

    if bare:
        idle_w, idle_src = (_own if own_bare else _measured)(bare, "bare idle, no process on the GPU")
    else:
        idle_w = round(ASSUMED_IDLE_FRACTION * tdp_w, 1)
        idle_src = f"ASSUMED {ASSUMED_IDLE_FRACTION:g} x TDP: no public bare-idle reading found"
    idle_src += unknown_note

    if ctx:
        ctx_w, ctx_src = (_own if own_ctx else _measured)(ctx, "a process holds the GPU at 0 % utilisation")
        if ctx_w < idle_w:
            raise InputError("idle_ctx_w", f"{ctx_w:g} W with a CUDA context is below bare idle {idle_w:g} W",
                             "check the readings' context column")
    else:
        step, step_src = context_step_w(architecture, tdp_w)
        ctx_w = round(idle_w + step, 1)
        ctx_src = f"idle_w + {_fmt(step)} W: {step_src}; inherits idle_w's confidence"
    return IdleFigures(idle_w=idle_w, idle_w_source=idle_src, idle_ctx_w=ctx_w, idle_ctx_w_source=ctx_src,
                       n_bare=len(bare), n_ctx=len(ctx), n_unknown=n_unknown)


def catalog_idle(gpu_id: str, tdp_w: float, architecture: str,
                 readings: Iterable[IdleReading] | None = None) -> IdleFigures:
    """The rule applied to one catalog GPU's readings (all of ``idle_readings.csv`` by default)."""
    readings = load_readings() if readings is None else list(readings)
    return idle_from_readings([r for r in readings if r.gpu == gpu_id], tdp_w, architecture)


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rewrite_catalog_text(text: str, figures: dict[str, IdleFigures]) -> str:
    """``catalog.toml``'s text with each listed GPU's four idle lines set to ``figures`` (rest untouched)."""
    keys = ("idle_w", "idle_w_source", "idle_ctx_w", "idle_ctx_w_source")
    out, current = [], None
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("["):
            current = stripped[len('[gpu."'):-2] if stripped.startswith('[gpu."') else None
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        if current in figures and key in keys:
            fig = figures[current]
            value = getattr(fig, key)
            line = f"{key} = {_toml_str(value) if isinstance(value, str) else repr(float(value))}\n"
        out.append(line)
    return "".join(out)


def add_measured(files: Sequence[str | Path], readings_path: str | Path = READINGS) -> int:
    """Append the own readings of measurement ``files`` to the readings CSV (a file already there is
    skipped); returns the rows added."""
    from .idle_measured import readings_from_measurement

    have = {(r.source_url, r.context) for r in load_readings(readings_path)}
    new = [r for f in files for r in readings_from_measurement(f) if (r.source_url, r.context) not in have]
    if new:
        cell = lambda v: "" if v is None else f"{v:g}" if isinstance(v, float) else v  # noqa: E731  (as read back)
        with open(readings_path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            for r in new:
                writer.writerow([cell(getattr(r, f)) for f in FIELDS])  # IdleReading's fields are the file's columns
    return len(new)


def main(argv: Sequence[str] | None = None) -> int:
    """Print, per catalog GPU, what the rule gives beside what the bundled catalog holds."""
    import argparse

    from .catalog import BUNDLED, _load_catalog

    parser = argparse.ArgumentParser(
        prog="python -m llmco2_sidecar.hardware.idle",
        description="Idle power per catalog GPU from hardware/idle_readings.csv by the rule in "
                    "hardware/SOURCE.md; prints the rule's idle_w / idle_ctx_w beside the catalog's "
                    "and exits 1 when they differ.")
    parser.add_argument("--readings", default=str(READINGS), help="readings CSV (default: the bundled file)")
    parser.add_argument("--add-measured", nargs="+", default=[], metavar="FILE",
                        help="append the idle readings of these profiling runs (data/measurements/*.csv, written by "
                             "llmco2 profile on a GPU: bare and with a CUDA context) to the readings file first; "
                             "they replace the public readings of their GPU and context")
    parser.add_argument("--write", action="store_true",
                        help="rewrite the bundled catalog.toml's idle_w / idle_ctx_w lines (and their sources) "
                             "to what the rule gives (default: only print)")
    args = parser.parse_args(argv)
    try:
        if args.add_measured:
            added = add_measured(args.add_measured, args.readings)
            print(f"added {added} reading{'s' if added != 1 else ''} to {args.readings}")
        readings = load_readings(args.readings)
    except (InputError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    catalog = _load_catalog(None)  # the bundled catalog only, whatever LLMCO2_HARDWARE says
    unknown = sorted({r.gpu for r in readings} - set(catalog.gpus))
    if unknown:
        print(f"error: idle_readings.gpu: not catalog ids: {', '.join(unknown)}", file=sys.stderr)
        return 2
    figures = {gid: catalog_idle(gid, spec.tdp_w, spec.architecture, readings) for gid, spec in catalog.gpus.items()}
    if args.write:
        BUNDLED.write_text(rewrite_catalog_text(BUNDLED.read_text(encoding="utf-8"), figures), encoding="utf-8")
        _load_catalog.cache_clear()
        catalog = _load_catalog(None)
        print(f"wrote {BUNDLED}")
    differ = 0
    print(f"{'gpu':18} {'bare':>4} {'ctx':>3} {'unk':>3} {'idle_w':>13} {'idle_ctx_w':>13}")
    for gid, spec in catalog.gpus.items():
        fig = figures[gid]
        same = math.isclose(fig.idle_w, spec.idle_w) and math.isclose(fig.idle_ctx_w, spec.idle_ctx_w)
        differ += not same
        print(f"{gid:18} {fig.n_bare:>4} {fig.n_ctx:>3} {fig.n_unknown:>3} "
              f"{spec.idle_w:>5g} -> {fig.idle_w:<5g} {spec.idle_ctx_w:>5g} -> {fig.idle_ctx_w:<5g}"
              f"{'' if same else '  (catalog differs)'}")
    return 1 if differ else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
