"""deploy/kubernetes checked offline: the built-in kinds against the Kubernetes JSON schemas bundled
in ``kubernetes-validate`` (strict: unknown fields fail), the prometheus-operator kinds (PodMonitor,
ServiceMonitor) against the operator's CRD schemas as compiled by the npm package
``@kubernetes-models/prometheus-operator`` (pinned in tools/k8s_crd_validate/package-lock.json, run
with node), and the native-sidecar wiring: one socket path on both sides of the shared emptyDir."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
CRD_TOOL = ROOT / "tools" / "k8s_crd_validate"
K8S_VERSION = "1.33"  # native sidecars are GA from 1.33 (beta, on by default, from 1.29)
CRD_GROUP = "monitoring.coreos.com/v1"


def _docs() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((path.name, doc))
    return out


DOCS = _docs()
BUILTIN = [(f, d) for f, d in DOCS if d["apiVersion"] != CRD_GROUP]
CUSTOM = [(f, d) for f, d in DOCS if d["apiVersion"] == CRD_GROUP]


def _pod(kind: str = "Deployment") -> dict:
    return next(d for _, d in BUILTIN if d["kind"] == kind)["spec"]["template"]["spec"]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_the_manifests_hold_what_the_docs_promise():
    kinds = sorted(d["kind"] for _, d in DOCS)
    assert kinds == ["Deployment", "PodMonitor", "Service", "ServiceMonitor"]


@pytest.mark.parametrize("name,doc", BUILTIN, ids=[f"{f}:{d['kind']}" for f, d in BUILTIN])
def test_builtin_kinds_validate_against_the_kubernetes_schema(name, doc):
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_rejects_a_broken_deployment():
    doc = copy.deepcopy(next(d for _, d in BUILTIN if d["kind"] == "Deployment"))
    doc["spec"]["template"]["spec"]["initContainers"][0]["restartPolicy"] = 7
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    doc = copy.deepcopy(next(d for _, d in BUILTIN if d["kind"] == "Deployment"))
    doc["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []  # a typo strict mode catches
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_llmco2_is_a_native_sidecar_sharing_one_socket_with_vllm():
    pod = _pod()
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "llmco2")
    vllm = next(c for c in pod["containers"] if c["name"] == "vllm")
    assert sidecar["restartPolicy"] == "Always"
    socket = _env(sidecar)["LLMCO2_UNIX"]
    assert _env(vllm)["LLMCO2_SIDECAR"] == "unix:" + socket  # the switch names the sidecar's socket
    mounts = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}
    vmounts = {m["name"]: m["mountPath"] for m in vllm["volumeMounts"]}
    shared = [n for n in mounts if n in vmounts and socket.startswith(mounts[n].rstrip("/") + "/")]
    assert shared, "the socket's folder is not a volume both containers mount"
    assert vmounts[shared[0]] == mounts[shared[0]]
    volume = next(v for v in pod["volumes"] if v["name"] == shared[0])
    assert "emptyDir" in volume
    assert sidecar["startupProbe"]["exec"]["command"] == ["test", "-S", socket]  # vLLM starts after the socket
    sc = sidecar["securityContext"]
    assert sc["runAsNonRoot"] and sc["runAsUser"] != 0 and sc["readOnlyRootFilesystem"]
    writable = set(mounts.values())
    assert str(Path(_env(sidecar)["LLMCO2_LOG"]).parent) in writable  # the log and journal have a volume


def test_monitors_scrape_the_port_the_sidecar_serves_metrics_on():
    pod = _pod()
    sidecar = next(c for c in pod["initContainers"] if c["name"] == "llmco2")
    port = next(p for p in sidecar["ports"] if p["name"] == "metrics")
    assert str(port["containerPort"]) == _env(sidecar)["LLMCO2_METRICS_PORT"]
    assert _env(sidecar)["LLMCO2_HOST"] == "0.0.0.0"  # /metrics reachable from Prometheus
    pod_labels = next(d for _, d in BUILTIN if d["kind"] == "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = next(d for _, d in BUILTIN if d["kind"] == "Service")
    for _, mon in CUSTOM:
        if mon["kind"] == "PodMonitor":
            assert mon["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
            assert mon["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        else:
            assert mon["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
            assert mon["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


def test_kustomization_names_files_that_exist():
    k = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for res in k["resources"]:
        assert (DEPLOY / res).is_file(), res
    for gen in k["configMapGenerator"]:
        for f in gen["files"]:
            assert (DEPLOY / f.split("=", 1)[-1]).is_file(), f


@pytest.fixture(scope="module")
def crd_validator():
    node, npm = shutil.which("node"), shutil.which("npm")
    if not (node and npm):
        pytest.skip("node and npm are needed for the CRD schema check (the CI machine has both)")
    if not (CRD_TOOL / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=CRD_TOOL, check=True,
                       timeout=300, capture_output=True)

    def run(docs: list[dict]) -> subprocess.CompletedProcess:
        return subprocess.run([node, "validate.mjs"], cwd=CRD_TOOL, input=json.dumps(docs), text=True,
                              capture_output=True, timeout=60)

    return run


def test_monitors_validate_against_the_prometheus_operator_crd_schemas(crd_validator):
    res = crd_validator([d for _, d in CUSTOM])
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.count(": ok") == len(CUSTOM)


def test_the_crd_check_rejects_a_broken_monitor(crd_validator):
    bad = copy.deepcopy(next(d for _, d in CUSTOM if d["kind"] == "PodMonitor"))
    del bad["spec"]["selector"]
    bad["spec"]["podMetricsEndpoints"][0]["port"] = 9464  # the operator wants the port's name
    res = crd_validator([bad])
    assert res.returncode == 1
    assert "selector" in res.stdout and "port must be string" in res.stdout
