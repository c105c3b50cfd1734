"""hardware/kernel_efficiency.py: the GEMM Roofline of a profile row, the committed table against the rule
over the committed profiles, and the figure every catalog GPU gets."""

import csv
from pathlib import Path

import pytest

from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.hardware import kernel_efficiency as ke
from llmco2_sidecar.hardware.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
TIMES = ROOT / "data" / "vidur_gemm" / "gemm_times.csv"


def test_gemm_shapes_and_times_of_a_row_by_hand():
    h100 = load_gpu("H100-SXM5-80GB")
    row = {"num_tokens": "4096", "num_tensor_parallel_workers": "2", "n_embd": "4096", "n_expanded_embd": "11008",
           "n_head": "32", "n_kv_head": "8", "use_gated_mlp": "True"}
    # QKV: 32 + 2 x 8 heads of 128 over 2 shards; O: 2048 -> 4096; gated up: 2 x 11008 / 2; down: 5504 -> 4096
    assert ke.gemm_shapes(row) == ((4096, 3072), (2048, 4096), (4096, 11008), (5504, 4096))
    assert ke.gemm_shapes(dict(row, use_gated_mlp="False"))[2] == (4096, 5504)
    tc, tm = ke.gemm_times_s(h100, 4096, 4096, 3072)
    assert tc == pytest.approx(2 * 4096 * 4096 * 3072 / h100.peak_flops("bf16"))
    assert tm == pytest.approx(2 * (4096 * 3072 + 4096 * 4096 + 4096 * 3072) / h100.mem_bandwidth_bytes_s)  # W, in, out
    assert tc > ke.BOUND_RATIO * tm  # 4,096 tokens: compute-bound
    tc1, tm1 = ke.gemm_times_s(h100, 1, 4096, 3072)
    assert tm1 > ke.BOUND_RATIO * tc1  # one token: memory-bound


def test_committed_table_is_the_rule_over_the_committed_profiles():
    derived = ke.derive(TIMES)
    with open(ke.TABLE, newline="") as fh:
        table = {r["gpu"]: r for r in csv.DictReader(fh)}
    assert set(table) == set(derived) == set(ke.VIDUR_GPUS.values())
    for gpu_id, d in derived.items():
        assert float(table[gpu_id]["gemm_efficiency"]) == pytest.approx(d["efficiency"]), gpu_id
        assert int(table[gpu_id]["points"]) == d["points"] == d["regimes"]["compute"]["points"] > 1000
        assert table[gpu_id]["source"].startswith("MEASURED")
        # every regime is reported; GEMMs near the ridge (neither bound) run furthest from Roofline
        r = d["regimes"]
        assert set(r) == {"compute", "memory", "between"}
        assert r["between"]["median"] < min(r["compute"]["median"], r["memory"]["median"])


def test_every_catalog_gpu_gets_a_figure_and_says_where_it_comes_from():
    measured = set(ke.VIDUR_GPUS.values())
    for gpu in load_catalog().gpus.values():
        eff, source = ke.efficiency(gpu), ke.efficiency_source(gpu)
        assert 0.3 < eff <= 1.0, gpu.gpu_id
        if gpu.gpu_id in measured:
            assert source.startswith("MEASURED"), gpu.gpu_id
        else:
            assert source.startswith("ASSUMED"), gpu.gpu_id
    h100, a100 = load_gpu("H100-SXM5-80GB"), load_gpu("A100-SXM4-80GB")
    # same die family: the measured sibling's figure; another architecture: the mean of the measured
    assert ke.efficiency(load_gpu("H200-SXM-141GB")) == ke.efficiency(h100)
    assert "H100-SXM5-80GB" in ke.efficiency_source(load_gpu("H200-SXM-141GB"))
    assert ke.efficiency(load_gpu("A100-SXM4-40GB")) == ke.efficiency(a100)
    assert ke.efficiency(load_gpu("B200")) == pytest.approx(round((ke.efficiency(h100) + ke.efficiency(a100)) / 2, 2))
    assert "mean" in ke.efficiency_source(load_gpu("L4"))


def test_cli_prints_the_figures_and_refuses_a_missing_profile_file(capsys, tmp_path):
    assert ke.main(["--times", str(TIMES)]) == 0
    out = capsys.readouterr().out
    assert "A100-SXM4-80GB: 0." in out and "H100-SXM5-80GB: 0." in out and "memory-bound" in out
    assert ke.main(["--times", str(tmp_path / "missing.csv")]) == 2
    assert "--times" in capsys.readouterr().err
