"""Idle power from cited readings: the rule (hand-made readings), the readings file, and the catalog's agreement."""

import math

import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.hardware.catalog import BUNDLED, load_catalog

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover
    import tomli as tomllib
from llmco2_sidecar.hardware.idle import (
    FIELDS, IdleReading, catalog_idle, context_step_w, idle_from_readings, load_readings, main,
    rewrite_catalog_text,
)

# Power limits a reading of each catalog GPU may show (the limit identifies the variant: an "A100 80GB
# PCIe" reading shows 300 W and is not an SXM reading). Ranges cover the SKUs' default limits.
VARIANT_CAP_W = {
    "A100-SXM4-40GB": (400, 400), "A100-SXM4-80GB": (400, 500), "A100-PCIe-80GB": (300, 300),
    "H100-SXM5-80GB": (700, 700), "H100-PCIe-80GB": (300, 350), "H100-NVL-94GB": (310, 400),
    "H200-SXM-141GB": (700, 700), "GH200-96GB-HBM3": (450, 1000), "GH200-144GB-HBM3e": (450, 1000),
    "L4": (72, 72), "L40S": (350, 350), "B200": (1000, 1000),
}


def r(watts, context="none", gpu="X", url=None, util=0.0):
    return IdleReading(gpu=gpu, watts=watts, context=context, perf_state="P0", util_pct=util, memory_used_mib=None,
                       power_cap_w=None, source_url=url or f"https://example.org/{watts}-{context}", date="", note="")


# ---- the rule, on hand-made readings ------------------------------------------------------------------

def test_median_of_several_bare_readings():
    fig = idle_from_readings([r(50), r(70), r(61)], tdp_w=400, architecture="Ampere")
    assert fig.idle_w == 61 and fig.n_bare == 3
    assert fig.idle_w_source.startswith("MEASURED: median of 3") and "range 50-70 W" in fig.idle_w_source
    even = idle_from_readings([r(58.5), r(61)], tdp_w=400, architecture="Ampere")
    assert even.idle_w == pytest.approx(59.8)  # median 59.75, rounded to 0.1 W


def test_single_reading_is_used_and_flagged_low_confidence():
    fig = idle_from_readings([r(85)], tdp_w=700, architecture="Hopper")
    assert fig.idle_w == 85 and "single public reading" in fig.idle_w_source and "low confidence" in fig.idle_w_source
    assert fig.idle_ctx_w == 85 + 38 and fig.idle_ctx_w_source.startswith("idle_w + 38 W")


def test_no_reading_keeps_the_flagged_tdp_assumption():
    fig = idle_from_readings([], tdp_w=700, architecture="Hopper")
    assert fig.idle_w == pytest.approx(84.0) and fig.idle_w_source.startswith("ASSUMED 0.12 x TDP")
    assert fig.idle_ctx_w == pytest.approx(122.0) and fig.n_bare == fig.n_ctx == fig.n_unknown == 0


def test_unknown_context_never_enters_a_median():
    only_unknown = idle_from_readings([r(137, "unknown")], tdp_w=1000, architecture="Blackwell")
    assert only_unknown.idle_w == 120 and only_unknown.idle_w_source.startswith("ASSUMED")
    assert "1 reading of unknown context" in only_unknown.idle_w_source and only_unknown.n_unknown == 1
    mixed = idle_from_readings([r(60), r(200, "unknown"), r(300, "unknown")], tdp_w=400, architecture="Ampere")
    assert mixed.idle_w == 60 and "2 readings of unknown context" in mixed.idle_w_source


def test_context_readings_set_idle_ctx_w_and_bare_ones_idle_w():
    fig = idle_from_readings([r(60), r(62), r(95, "cuda"), r(105, "cuda")], tdp_w=400, architecture="Ampere")
    assert fig.idle_w == 61 and fig.idle_ctx_w == 100 and fig.n_ctx == 2
    assert fig.idle_ctx_w_source.startswith("MEASURED: median of 2")
    ctx_only = idle_from_readings([r(66.5, "cuda")], tdp_w=300, architecture="Ampere")
    assert ctx_only.idle_w == 36 and ctx_only.idle_ctx_w == 66.5  # bare assumed, context measured
    assert "low confidence" in ctx_only.idle_ctx_w_source


def test_context_below_bare_idle_is_a_data_error():
    with pytest.raises(InputError) as e:
        idle_from_readings([r(90), r(70, "cuda")], tdp_w=700, architecture="Hopper")
    assert e.value.field == "idle_ctx_w"


def test_readings_of_two_gpus_are_refused():
    with pytest.raises(InputError):
        idle_from_readings([r(60, gpu="A"), r(61, gpu="B")], tdp_w=400, architecture="Ampere")


def test_context_step_by_memory_kind():
    assert context_step_w("Hopper", 700)[0] == 38.0
    assert context_step_w("Ada Lovelace", 350)[0] == 66.0  # the L40S, measured
    step, src = context_step_w("Ada Lovelace", 72)  # the L4: scaled by TDP, an assumption
    assert step == pytest.approx(13.6) and src.startswith("ASSUMED")


# ---- the readings file ----------------------------------------------------------------------------------

def test_readings_file_loads_and_every_gpu_is_a_catalog_id():
    readings = load_readings()
    ids = set(load_catalog(None).gpus)
    assert readings and {x.gpu for x in readings} <= ids
    assert all(x.util_pct in (0.0, None) for x in readings)


def test_readings_are_independent_and_of_the_right_variant():
    readings = load_readings()
    keys = [(x.gpu, x.source_url) for x in readings]
    assert len(keys) == len(set(keys)), "one source entered twice for the same GPU"
    for x in readings:
        if x.power_cap_w is not None:
            lo, hi = VARIANT_CAP_W[x.gpu]
            assert lo <= x.power_cap_w <= hi, (x.gpu, x.power_cap_w, x.source_url)
        if x.context != "unknown":  # a known state must show the process/memory facts behind it
            assert x.memory_used_mib is not None and x.power_cap_w is not None, x.source_url
        if x.context == "none":
            assert x.memory_used_mib <= 16, (x.gpu, x.source_url)  # no process holds memory


def _write(tmp_path, rows):
    f = tmp_path / "readings.csv"
    f.write_text(",".join(FIELDS) + "\n" + "".join(row + "\n" for row in rows))
    return f


def test_busy_or_malformed_rows_are_refused_naming_the_field(tmp_path):
    ok = "L4,16,none,P8,0,1,72,https://example.org/a,2024-11-12,n"
    assert load_readings(_write(tmp_path, [ok]))[0].watts == 16
    cases = {
        "util_pct": "L4,30,none,P0,12,1,72,https://example.org/a,,busy",
        "context": "L4,16,idle,P8,0,1,72,https://example.org/a,,",
        "watts": "L4,-3,none,P8,0,1,72,https://example.org/a,,",
        "source_url": "L4,16,none,P8,0,1,72,somewhere,,",
    }
    for field, row in cases.items():
        with pytest.raises(InputError) as e:
            load_readings(_write(tmp_path, [row]))
        assert e.value.field.endswith(field), (field, e.value.field)
    bad_header = tmp_path / "h.csv"
    bad_header.write_text("gpu,watts\nL4,16\n")
    with pytest.raises(InputError) as e:
        load_readings(bad_header)
    assert e.value.field == "idle_readings.header"


# ---- the catalog follows the rule (so the two cannot drift) ---------------------------------------------

def test_catalog_idle_fields_are_what_the_rule_gives(monkeypatch):
    monkeypatch.delenv("LLMCO2_HARDWARE", raising=False)
    readings = load_readings()
    for gid, spec in load_catalog(None).gpus.items():
        fig = catalog_idle(gid, spec.tdp_w, spec.architecture, readings)
        assert math.isclose(spec.idle_w, fig.idle_w), (gid, spec.idle_w, fig.idle_w)
        assert math.isclose(spec.idle_ctx_w, fig.idle_ctx_w), (gid, spec.idle_ctx_w, fig.idle_ctx_w)
        assert spec.sources["idle_w"] == fig.idle_w_source, gid
        assert spec.sources["idle_ctx_w"] == fig.idle_ctx_w_source, gid
        assert 0 < spec.idle_w <= spec.idle_ctx_w < spec.tdp_w, gid


def test_rewrite_touches_only_the_idle_lines_of_listed_gpus():
    text = BUNDLED.read_text(encoding="utf-8")
    fig = idle_from_readings([r(77.7), r(80.1)], tdp_w=700, architecture="Hopper")
    new = rewrite_catalog_text(text, {"H100-SXM5-80GB": fig})
    data, old = tomllib.loads(new), tomllib.loads(text)
    assert data["gpu"]["H100-SXM5-80GB"]["idle_w"] == pytest.approx(78.9)
    assert data["gpu"]["H100-SXM5-80GB"]["idle_w_source"] == fig.idle_w_source
    assert data["gpu"]["H100-SXM5-80GB"]["idle_ctx_w"] == pytest.approx(78.9 + 38)
    for gid in old["gpu"]:
        if gid != "H100-SXM5-80GB":
            assert data["gpu"][gid] == old["gpu"][gid], gid
    assert data["server"] == old["server"] and data["aliases"] == old["aliases"]
    assert rewrite_catalog_text(text, {}) == text


def test_cli_reports_agreement_and_refuses_a_bad_file(tmp_path, capsys):
    assert main([]) == 0
    assert "H100-SXM5-80GB" in capsys.readouterr().out
    bad = _write(tmp_path, ["L4,16,none,P8,5,1,72,https://example.org/a,,"])
    assert main(["--readings", str(bad)]) == 2
    assert "util_pct" in capsys.readouterr().err
