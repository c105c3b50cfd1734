"""The install the README gives: ``pip install .`` from a clone and ``pip install 'git+URL'``. The wheel
carries the plugin, its entry point and the data the product needs, and installing it (or its
``[vllm]`` extra) asks for no vLLM build."""

from __future__ import annotations

import configparser
import email
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (whl,) = out.glob("llmco2_sidecar-*.whl")
    return whl


def test_wheel_carries_the_plugin_the_model_and_the_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("llmco2_vllm/plugin.py", "llmco2_vllm/middleware.py", "llmco2_sidecar/cli/doctor.py",
                   "llmco2_sidecar/_proto/events_pb2.py", "llmco2_sidecar/hardware/catalog.toml",
                   "llmco2_sidecar/energy/regions.toml", "llmco2_sidecar/models/configs/_aliases.json",
                   "llmco2_sidecar/data/azure_conv_2023.csv", "llmco2_sarathi/__init__.py"):
        assert needed in names, needed
    assert any(n.startswith("llmco2_sidecar/predictor/weights/") and n.endswith(".safetensors") for n in names)
    assert any(n.startswith("llmco2_sidecar/training_data/") for n in names)
    assert not any(n.startswith(("tests/", "benchmarks/", "deploy/")) for n in names)


def test_no_vllm_build_is_required_by_the_package_or_its_vllm_extra(wheel):
    z = zipfile.ZipFile(wheel)
    meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.message_from_string(z.read(meta_name).decode())
    requires = meta.get_all("Requires-Dist") or []
    assert "vllm" in (meta.get_all("Provides-Extra") or [])  # old command lines keep working
    assert not [r for r in requires if r.lower().startswith("vllm")], requires
    eps = configparser.ConfigParser()
    eps.read_string(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode())
    assert eps["vllm.general_plugins"]["llmco2_sidecar"] == "llmco2_vllm.plugin:register"
    assert eps["console_scripts"]["llmco2"] == "llmco2_sidecar.cli.main:main"


@pytest.mark.slow
def test_pip_install_from_a_git_url(tmp_path):
    """``pip install 'git+file://<clone>'`` into a fresh virtual environment (the committed HEAD; no
    dependencies, so no torch download): the plugin is registered there and does nothing while the
    switch is off."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", f"git+file://{ROOT}"],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PIP_NO_INPUT": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    check = ("from importlib.metadata import entry_points, version\n"
             "ep = [e for e in entry_points(group='vllm.general_plugins') if e.name == 'llmco2_sidecar'][0]\n"
             "register = ep.load()\n"
             "import os, sys; os.environ.pop('LLMCO2_SIDECAR', None)\n"
             "register()\n"
             "print(version('llmco2-sidecar'), ep.value, 'vllm' in sys.modules)\n")
    out = subprocess.run([str(py), "-c", check], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0.1.0", "llmco2_vllm.plugin:register", "False"]
