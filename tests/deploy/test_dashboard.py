"""The Grafana dashboard (deploy/kubernetes/grafana/llmco2-dashboard.json) asks only for metrics the
sidecar exports, with labels those metrics have. The exported names are read from the code: every
metric of a fresh :class:`SidecarMetrics`, with the series names Prometheus gives each type
(``_total`` for counters; ``_bucket``, ``_sum``, ``_count`` for histograms)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from llmco2_sidecar.service.metrics import SidecarMetrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "grafana" / "llmco2-dashboard.json"
_NAME = re.compile(r"\b(llmco2_[A-Za-z0-9_]+)")
_SELECTOR = re.compile(r"\b(llmco2_[A-Za-z0-9_]+)\{([^}]*)\}")
_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)")
# labels Prometheus attaches to every scraped series (target labels), not the exporter's
_TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "service", "endpoint"}
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
             "summary": ("_sum", "_count", ""), "info": ("_info",), "enum": ("",)}


def exported_series(metrics: SidecarMetrics | None = None) -> dict[str, set[str]]:
    """Series name -> label names, for every metric the sidecar registers."""
    metrics = metrics or SidecarMetrics()
    out: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and not getattr(value, "_labelvalues", ()):
            labels = set(value._labelnames)
            for suffix in _SUFFIXES[value._type]:
                out[value._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable."""
    found = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                found.append((f"panel {p.get('title')!r} target {t.get('refId')}", t.get("expr", "")))
            walk(p.get("panels", []))

    walk(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            found.append((f"variable {var.get('name')!r}", q.get("query", "") if isinstance(q, dict) else str(q)))
    return found


def problems(dashboard: dict, series: dict[str, set[str]]) -> list[str]:
    """Every query naming no llmco2 metric, an unknown one, or a label the metric lacks."""
    out = []
    for where, expr in dashboard_queries(dashboard):
        names = _NAME.findall(expr)
        if not names:
            out.append(f"{where}: names no llmco2 metric: {expr!r}")
        for name in names:
            if name not in series:
                out.append(f"{where}: {name} is not exported by the sidecar")
        for name, body in _SELECTOR.findall(expr):
            for label, _op in _LABEL.findall(body):
                if name in series and label not in series[name] and label not in _TARGET_LABELS:
                    out.append(f"{where}: {name} has no label {label!r} (has {sorted(series[name])})")
    return out


def test_series_names_come_from_the_code():
    series = exported_series()
    assert series["llmco2_carbon_grams_total"] == {"kind"}
    assert series["llmco2_request_carbon_grams_bucket"] == {"le"}
    assert "llmco2_streams_open" in series and "llmco2_carbon_grams" not in series


def test_every_dashboard_query_names_a_metric_the_sidecar_exports():
    dashboard = json.loads(DASHBOARD.read_text())
    queries = dashboard_queries(dashboard)
    assert len(queries) >= 15
    assert problems(dashboard, exported_series()) == []


def test_the_check_catches_a_missing_metric_and_a_wrong_label():
    dashboard = {"panels": [{"title": "x", "targets": [
        {"refId": "A", "expr": "sum(rate(llmco2_carbon_grams_total[5m]))"},
        {"refId": "B", "expr": "sum(rate(llmco2_not_a_metric_total[5m]))"},
        {"refId": "C", "expr": 'sum(rate(llmco2_carbon_grams_total{phase="decode", pod=~"$pod"}[5m]))'},
        {"refId": "D", "expr": "vector(1)"}]}]}
    found = problems(dashboard, exported_series())
    assert len(found) == 3, found
    assert "llmco2_not_a_metric_total is not exported" in found[0]
    assert "no label 'phase'" in found[1]
    assert "names no llmco2 metric" in found[2]


def test_dashboard_is_a_provisionable_classic_model():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]


def test_committed_dashboard_is_what_the_generator_writes():
    import subprocess
    import sys

    tool = Path(__file__).resolve().parents[2] / "tools" / "make_dashboard.py"
    res = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, "run: python tools/make_dashboard.py " + res.stderr


def test_energy_is_never_added_across_its_sources():
    """llmco2_energy_joules_total has a predicted and (with --measure) a measured series for the same
    energy: every dashboard query on it selects one source per selector or keeps sources apart."""
    dashboard = json.loads(DASHBOARD.read_text())
    checked = 0
    for where, expr in dashboard_queries(dashboard):
        for name, labels in _SELECTOR.findall(expr):
            if name != "llmco2_energy_joules_total":
                continue
            checked += 1
            one_source = re.search(r'\bsource\s*=\s*"[a-z]+"', labels)
            kept_apart = re.search(r"by \([^)]*\bsource\b", expr)
            assert one_source or kept_apart, f"{where}: adds predicted and measured energy: {expr}"
    assert checked >= 2
