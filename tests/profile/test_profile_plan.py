"""Plan sizing by budget and memory, and --dry-run output (no torch needed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.profile import plan as P

REPO = Path(__file__).resolve().parents[2]
H100 = P.gpu_limits("H100")
PAIRS = [(374, 44), (396, 109), (879, 55), (91, 16), (2200, 300), (9000, 12)]


def test_budget_bounds_the_estimate_and_grows_the_plan():
    small = P.build_plan(120, H100, pairs=PAIRS)
    large = P.build_plan(900, H100, pairs=PAIRS)
    assert small.est_total_s <= 120 + 1e-6 and large.est_total_s <= 900 + 1e-6
    assert len(large.points) > 2 * len(small.points) > 0
    assert large.est_total_s > 0.8 * 900  # the budget is used, not left idle
    models = {p.model for p in large.points}
    assert {"meta-llama/Llama-3.1-8B", "Qwen/Qwen3-8B", "meta-llama/Llama-3.1-70B"} <= models
    seventy = [p for p in large.points if p.model == "meta-llama/Llama-3.1-70B"]
    assert {p.layers for p in seventy} == {8}
    for p in large.points:  # clipping rules
        assert 16 <= p.output <= 256 and 16 <= p.prompt <= 4096 and p.batch in P.BATCHES
        assert p.mem_bytes <= H100.memory_bytes * P.MEMORY_FRACTION
    assert {p.source for p in large.points} == {"azure", "grid"}


def test_memory_limit_skips_points():
    small_gpu = P.GpuLimits("tiny", H100.peak_flops, H100.mem_bandwidth_bytes_s, 24e9)
    plan = P.build_plan(900, small_gpu, models=[("meta-llama/Llama-3.1-8B", None)], pairs=PAIRS)
    assert plan.skipped.get("memory", 0) > 0
    assert all(p.mem_bytes <= 24e9 * P.MEMORY_FRACTION for p in plan.points)
    none_fit = P.build_plan(900, small_gpu, models=[("Qwen/Qwen3-32B", None)], pairs=PAIRS)
    assert none_fit.points == [] and none_fit.skipped == {"model memory": 1}


def test_estimate_is_monotone_in_work():
    spec = P.resolve_model("meta-llama/Llama-3.1-8B")
    assert P.prefill_seconds(spec, H100, 8, 2048) > P.prefill_seconds(spec, H100, 1, 2048)
    assert P.decode_seconds(spec, H100, 1, 512, 256) > P.decode_seconds(spec, H100, 1, 512, 16)
    assert P.decode_seconds(spec, H100, 1, 512, 1) == 0.0
    # an 8B decode step is bandwidth-bound: at least the weight read time
    assert P.decode_seconds(spec, H100, 1, 128, 2) > spec.weight_bytes / H100.mem_bandwidth_bytes_s


def test_parse_models_and_errors():
    assert P.parse_models("a/b, c/d:4") == [("a/b", None), ("c/d", 4)]
    assert P.parse_models(None) == list(P.DEFAULT_MODELS)
    for bad in ("a/b:x", "a/b:0", " , "):
        with pytest.raises(InputError):
            P.parse_models(bad)
    with pytest.raises(InputError, match="budget"):
        P.build_plan(0, H100)
    plan = P.build_plan(100, H100, models=[("nobody/none", None)], pairs=PAIRS)
    assert plan.points == [] and "unknown model" in plan.skipped


def test_azure_pairs_are_read():
    pairs = P.load_azure_pairs()
    if P.azure_csv_path() is None:
        pytest.skip("Azure conversation trace not present")
    assert len(pairs) > 10000 and all(p >= 1 and o >= 1 for p, o in pairs[:100])


_PROBE = """
import sys
from llmco2_sidecar.profile.__main__ import main
rc = main(sys.argv[1:])
heavy = ("torch", "transformers", "grpc", "torch_geometric", "matplotlib")
print("IMPORTED", [m for m in heavy if m in sys.modules], file=sys.stderr)
sys.exit(rc)
"""


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_dry_run_prints_plan_without_heavy_imports():
    proc = _run("--dry-run", "--budget-seconds", "300")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("# plan for NVIDIA H100")
    assert "estimated time" in lines[1] and "of a 300 s budget" in lines[1]
    est = float(lines[1].split("estimated time ")[1].split(" s")[0])
    assert 0 < est <= 300
    header = next(ln for ln in lines if ln.startswith("model"))
    assert header.split() == ["model", "layers", "batch", "prompt", "output", "source", "est_s", "mem_gb"]
    rows = [ln for ln in lines if not ln.startswith(("#", "model"))]
    assert len(rows) >= 8
    assert "IMPORTED []" in proc.stderr  # no torch, transformers, grpc, torch_geometric, matplotlib


def test_dry_run_bad_input_exits_2():
    proc = _run("--dry-run", "--budget-seconds", "-5")
    assert proc.returncode == 2 and "budget-seconds" in proc.stderr
    proc = _run("--device", "cpu", "--out", "x.csv")
    assert proc.returncode == 2 and "--smoke" in proc.stderr


def test_gpu_run_without_cuda_is_a_clear_error(tmp_path):
    proc = _run("--out", str(tmp_path / "x.csv"), "--budget-seconds", "10")
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    assert not (tmp_path / "x.csv").exists()
