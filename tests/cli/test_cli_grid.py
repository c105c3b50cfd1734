"""--grid on `llmco2 estimate` and `llmco2 serve --help`, as real subprocesses (a loopback API for the live source)."""

import json
import os
import subprocess
import sys

from grid_fakes import EM_LATEST, FakeApi, fresh, fresh_ts

ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}
Q = ["--model", "meta-llama/Llama-2-7b-hf", "--gpu", "A100", "--batch", "4", "--prompt-len", "256", "--output-len", "32"]


def llmco2(*args, env=None):
    return subprocess.run([sys.executable, "-m", "llmco2_sidecar.cli.main", *args], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=120)


def test_estimate_with_live_grid_csv_and_errors(tmp_path):
    api = FakeApi()
    now = fresh_ts()
    api.set("/v3/carbon-intensity/latest", 200, fresh(EM_LATEST))
    try:
        p = llmco2("estimate", *Q, "--json", "--grid", "electricitymaps:DE", "--grid-url", api.url + "/v3",
                   env={"ELECTRICITYMAPS_API_KEY": "abc"})
    finally:
        api.close()
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["carbon_intensity_g_per_kwh"] == 322.0
    assert r["carbon_intensity_kind"] == "location" and r["carbon_intensity_ts"] in (now, now + 3600)  # the hour may turn
    assert r["carbon_intensity_source"] == "electricitymaps:DE (lifecycle estimated)"
    assert api.requests[0]["headers"]["auth-token"] == "abc"
    c = r["carbon_g"]["total"]
    assert r["sci"]["g_per_request"] == c / 4 and abs(r["sci"]["g_per_1k_output_tokens"] - c * 1000 / (4 * 32)) < 1e-12
    # an hourly CSV through the environment variable (LLMCO2_GRID); an hour it does not cover -> the static region
    f = tmp_path / "grid.csv"
    f.write_text("timestamp,g_per_kwh\n2026-12-06T10:00Z,250\n")
    p = llmco2("estimate", *Q, "--json", env={"LLMCO2_GRID": f"csv:{f}"})
    assert p.returncode == 0, p.stderr
    assert "fallback: outside csv:grid.csv" in json.loads(p.stdout)["carbon_intensity_source"]
    # bad sources: one line naming the field, exit 2
    for args, field in [(["--grid", "moon:1"], "grid:"), (["--grid", "static:atlantis"], "region:"),
                        (["--grid", "ukci", "--carbon-intensity", "100"], "carbon-intensity:"),
                        (["--grid", f"csv:{tmp_path / 'none.csv'}"], "grid:")]:
        p = llmco2("estimate", *Q, *args)
        assert p.returncode == 2, (args, p.stderr)
        assert field in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_serve_help_lists_grid_and_otlp():
    p = llmco2("serve", "--help")
    assert p.returncode == 0
    for flag in ("--grid ", "--grid-url", "--grid-ttl-s", "--grid-stale-s", "LLMCO2_GRID", "--otlp", "watttime:REGION"):
        assert flag in p.stdout, flag


def test_serve_rejects_bad_grid_in_one_line(tmp_path):
    p = llmco2("serve", "--port", "0", "--log", str(tmp_path / "c.jsonl"), "--grid", "ukci:99")
    assert p.returncode == 2 and "grid: ukci region '99'" in p.stderr, p.stderr
