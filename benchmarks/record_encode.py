"""What writing one request record's log line costs: the shipped encoder against the standard library's.

The records are real: the sidecar's own pipeline (``Pipeline._process``, shipped GNN predictor, in
process, no gRPC) over the sidecar benchmark's workload writes them to a carbon log, which is read back.
Each record is then encoded again and again, timed:

* ``carbon_log.dumps``, the shipped line (orjson, since 2026-12-08);
* the standard library's C encoder with the log's settings before 2026-12-08 (``", "`` and ``": "``,
  ``allow_nan=False``, ``default=float``, the encoder made once: what ``dumps`` was);
* ``float.__repr__`` over the record's floats (what the standard library spends on each figure).

One process pinned to CPU 0; the median of 5 rounds of ``--n`` encodings of each record in turn.
Writes benchmarks/results/record_encode.json and .md. Usage: python benchmarks/record_encode.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from json.encoder import c_encode_basestring_ascii, c_make_encoder
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import pipeline_cold as cold  # noqa: E402  (accepted one-step messages of the benchmark workload)
import sidecar as bench  # noqa: E402  (machine facts, results writer)

from llmco2_sidecar.config import SidecarConfig  # noqa: E402
from llmco2_sidecar.service.carbon_log import dumps, read_records  # noqa: E402
from llmco2_sidecar.service.server import SidecarCore  # noqa: E402

ROUNDS = 5


def real_records(tmp: Path, steps: int = 256) -> list[dict]:
    """Request records the pipeline writes for ``steps`` steps of the benchmark workload."""
    core = SidecarCore(SidecarConfig(port=0, log=str(tmp / "carbon.jsonl"), predictor="default"))
    loop = asyncio.new_event_loop()
    core.start(loop)
    try:
        for group in cold._micro_batches(core, 64, steps // 64, "encode"):
            core.pipeline._process(group)
    finally:
        core.pipeline.stop()
        core.carbon_log.close()
        core.journal.close()
        loop.close()
    return read_records(tmp / "carbon.jsonl")


def _stdlib_before():
    """``dumps`` as it was before 2026-12-08 (the standard library's C encoder, made once)."""
    enc = c_make_encoder(None, float, c_encode_basestring_ascii, None, ": ", ", ", False, False, False)
    return lambda rec: "".join(enc(rec, 0))


def _floats(rec: dict) -> list[float]:
    out = []
    for v in rec.values():
        if type(v) is float:
            out.append(v)
        elif type(v) is dict:
            out.extend(w for w in v.values() if type(w) is float)
    return out


def _per_call_us(fn, items: list, n: int) -> float:
    """Median over ROUNDS of the CPU time per call of ``fn`` over ``items`` repeated to ``n`` calls."""
    reps = max(1, n // len(items))
    times = []
    for _ in range(ROUNDS):
        t0 = time.thread_time()
        for _ in range(reps):
            for x in items:
                fn(x)
        times.append((time.thread_time() - t0) / (reps * len(items)))
    return statistics.median(times) * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few encodings (a smoke test, not for the results)")
    ap.add_argument("--n", type=int, default=20_000, help="encodings per round (default 20,000)")
    ap.add_argument("--out", default=str(bench.RESULTS), help="results folder")
    args = ap.parse_args(argv)
    n = 500 if args.quick else args.n
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[0]})
    records = real_records(Path(tempfile.mkdtemp(prefix="llmco2-encode-")))
    if not records:
        raise SystemExit("the pipeline wrote no request record")
    floats = [x for r in records for x in _floats(r)]
    before = _stdlib_before()
    res = {"machine": bench.machine(), "cpu_pinned": cpus[0], "records": len(records),
           "floats_per_record": len(floats) / len(records), "line_bytes": sum(len(dumps(r)) for r in records) / len(records),
           "shipped_us": _per_call_us(dumps, records, n), "stdlib_before_us": _per_call_us(before, records, n),
           "float_repr_us": _per_call_us(float.__repr__, floats, n * 10), "rounds": ROUNDS, "n": n,
           "command": "python benchmarks/record_encode.py" + (" --quick" if args.quick else "")}
    bench.write_results(Path(args.out), "record_encode", res, render)
    return 0


def render(r: dict) -> str:
    m = r["machine"]
    per_record_repr = r["float_repr_us"] * r["floats_per_record"]
    return "\n".join([
        "# Writing a request record's log line", "",
        f"Command: `{r['command']}` ({r['date_utc']} UTC). Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, "
        f"Python {m['python']}; one process pinned to CPU {r['cpu_pinned']}. {r['records']} request records written by "
        f"the sidecar's pipeline (shipped GNN predictor, the sidecar benchmark's workload), each line "
        f"{r['line_bytes']:.0f} bytes with {r['floats_per_record']:.0f} floats; CPU time per encoding, the median of "
        f"{r['rounds']} rounds of {r['n']:,}.", "",
        "| encoder | CPU per record |", "|---|---|",
        f"| `carbon_log.dumps` (orjson, shipped since 2026-12-08) | {r['shipped_us']:.1f} us |",
        f"| the standard library's C encoder, the log's settings before 2026-12-08 | {r['stdlib_before_us']:.1f} us |",
        f"| of which `float.__repr__`, {r['floats_per_record']:.0f} floats x {r['float_repr_us'] * 1000:.0f} ns | "
        f"{per_record_repr:.1f} us |", "",
        f"At one finish every 4 steps (the sidecar benchmark's workload) the difference is "
        f"{(r['stdlib_before_us'] - r['shipped_us']) / 4:.1f} us of CPU per step.", ""])


if __name__ == "__main__":
    sys.exit(main())
