"""Feature detection instead of a version gate (llmco2_vllm.compat), against stand-ins in the shapes of
real vLLM releases (vllm_shapes.py: 0.9, 0.14, 0.32, 0.33) and of plausible breaking changes; the
plugin's register() run in a fresh interpreter over a stand-in ``vllm`` package; the patched
scheduler called the way a later vLLM might (by keyword)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vllm_shapes
from llmco2_vllm import compat
from llmco2_vllm.compat import Features, check, detect, version_tested
from llmco2_vllm.patch import patch_scheduler
from llmco2_vllm.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shape, layout", [("0.9", "per_request"), ("0.14", "columns"), ("0.32", "columns"),
                                           ("0.33", "columns")])
def test_released_shapes_have_every_feature(shape, layout):
    f = detect(*vllm_shapes.load(shape))
    assert f.ok, f.missing
    assert f.cached_layout == layout


@pytest.mark.parametrize("shape, expected", [
    ("broken_renamed_field", ["SchedulerOutput.num_scheduled_tokens"]),
    ("broken_keyword_only", ["Scheduler.update_from_output(self, <the SchedulerOutput>, ...) taking the "
                             "SchedulerOutput as its first argument (found update_from_output(self, *, "
                             "scheduler_output, model_runner_output))"]),
    ("broken_no_free_request", ["Scheduler._free_request()"]),
    ("broken_request", ["Request.num_prompt_tokens", "Request.num_output_tokens"]),
    ("broken_cached", ["CachedRequestData.num_computed_tokens (or, before vLLM 0.10, one CachedRequestData per "
                       "request with req_id and num_computed_tokens)"]),
])
def test_broken_shapes_name_exactly_what_is_missing(shape, expected):
    assert list(detect(*vllm_shapes.load(shape)).missing) == expected


def test_static_and_class_methods_are_not_the_wrapped_instance_methods():
    sched, out, req = vllm_shapes.load("0.33")

    class Odd(sched):
        _free_request = staticmethod(lambda request: None)

    assert detect(Odd, out, req).missing == ("Odd._free_request() as an instance method (it is a staticmethod)",)


def test_tested_range():
    lo, hi = compat.TESTED
    assert version_tested(f"{lo[0]}.{lo[1]}.0") and version_tested(f"{hi[0]}.{hi[1]}.1")
    assert version_tested(f"{hi[0]}.{hi[1]}.0rc1") and version_tested(f"{hi[0]}.{hi[1]}.1.dev3+gabc")
    assert not version_tested(f"{hi[0]}.{hi[1] + 1}.0") and not version_tested(f"{lo[0]}.{lo[1] - 1}.9")
    for v in ("", "dev", "1", "x.y"):
        assert not version_tested(v)


def test_check_refuses_only_what_is_missing_and_warns_once_on_untested(caplog, monkeypatch):
    monkeypatch.delenv("LLMCO2_VLLM_COMPAT_WARNED", raising=False)
    caplog.set_level(logging.WARNING, logger="vllm.llmco2")
    hi = compat.TESTED[1]
    assert check(f"{hi[0]}.{hi[1]}.0", Features()) and not caplog.records  # tested: silent
    untested = f"{hi[0]}.{hi[1] + 1}.0"
    assert check(untested, Features()) and check(untested, Features())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and f"vLLM {untested} is untested" in warnings[0] and "carbon accounting is on" in warnings[0]
    assert os.environ["LLMCO2_VLLM_COMPAT_WARNED"] == "1"  # vLLM's child processes inherit it: no repeat there
    caplog.clear()
    assert not check(f"{hi[0]}.{hi[1]}.0", Features(missing=("SchedulerOutput.num_scheduled_tokens",)))
    (msg,) = [r.getMessage() for r in caplog.records]
    assert "lacks what the step hook reads: SchedulerOutput.num_scheduled_tokens; running unhooked" in msg


def test_detect_without_vllm_names_the_module():
    if any(p for p in sys.path if (Path(p) / "vllm" / "__init__.py").exists()):
        pytest.skip("a vllm package is importable here")
    f = detect()
    assert not f.ok and f.missing[0].startswith("module vllm.v1.core.sched.scheduler (ModuleNotFoundError")


_REGISTER = r"""
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
from llmco2_vllm.plugin import register
register()
from vllm.v1.core.sched import scheduler
print(json.dumps({"patched": bool(getattr(scheduler.Scheduler, "_llmco2_patched", False))}))
"""


def _register_in(tmp_path: Path, shape: str, without_v1: bool = False) -> tuple[dict | None, str]:
    pkg = vllm_shapes.write_package(shape, tmp_path / shape, without_v1=without_v1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCO2_", "VLLM"))}
    env.update(LLMCO2_SIDECAR="127.0.0.1:9", LLMCO2_GPU="A100",
               PYTHONPATH=os.pathsep.join([str(pkg), str(ROOT / "integrations" / "vllm"), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", _REGISTER], capture_output=True, text=True, env=env, timeout=60)
    out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    return out, proc.stderr


def test_register_hooks_an_untested_release_with_every_feature(tmp_path):
    out, log = _register_in(tmp_path, "0.33")
    assert out == {"patched": True}, log
    assert log.count("vLLM 0.33.0 is untested") == 1
    assert "running unhooked" not in log


def test_register_refuses_a_release_missing_a_feature_and_says_which(tmp_path):
    out, log = _register_in(tmp_path, "broken_renamed_field")
    assert out == {"patched": False}, log
    assert ("vLLM 0.34.0 lacks what the step hook reads: SchedulerOutput.num_scheduled_tokens; running unhooked"
            in log)
    assert "untested" not in log


def test_register_without_the_v1_engine(tmp_path):
    pkg = vllm_shapes.write_package("0.9", tmp_path / "v0", without_v1=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCO2_", "VLLM"))}
    env.update(LLMCO2_SIDECAR="127.0.0.1:9", LLMCO2_GPU="A100",
               PYTHONPATH=os.pathsep.join([str(pkg), str(ROOT / "integrations" / "vllm"), str(ROOT)]))
    code = ("import logging, sys\nlogging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')\n"
            "from llmco2_vllm.plugin import register\nregister()\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
    assert "vLLM 0.9.2 lacks what the step hook reads: module vllm.v1.core.sched.scheduler (ModuleNotFoundError" \
        in proc.stderr


def test_patch_scheduler_refuses_a_misshapen_scheduler(caplog):
    sched, _, _ = vllm_shapes.load("broken_keyword_only")
    caplog.set_level(logging.WARNING, logger="vllm.llmco2")
    assert not patch_scheduler(Settings(target="127.0.0.1:9", gpu="A100"), sched)
    assert not getattr(sched, "_llmco2_patched", False)
    assert "update_from_output(self, <the SchedulerOutput>, ...)" in caplog.text


def test_wrappers_find_the_output_and_request_passed_by_keyword(tmp_path):
    """A later vLLM might call ``update_from_output(scheduler_output=...)`` and ``_free_request(request=...)``:
    the wrappers find them under vLLM's own parameter names and the records still come."""
    from llmco2_sidecar.config import SidecarConfig
    from llmco2_sidecar.service.carbon_log import read_records
    from llmco2_sidecar.service.server import SidecarThread
    from test_vllm_plugin import MiniScheduler, Request, Status, _vllm_config

    class KeywordScheduler(MiniScheduler):  # vLLM 0.33's parameter names
        def update_from_output(self, scheduler_output, model_runner_output=None):
            return super().update_from_output(scheduler_output, model_runner_output)

        def _free_request(self, request, delay_free_blocks=False):
            return super()._free_request(request)

    sc = SidecarThread(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="roofline")).start()
    try:
        assert patch_scheduler(Settings(target=sc.address, gpu="A100-SXM4-80GB"), KeywordScheduler)
        s = KeywordScheduler(_vllm_config())
        hook = s._llmco2_hook
        s.add_request(Request("cmpl-k0-0-00000000", 20, 3))
        s.add_request(Request("cmpl-k1-0-00000001", 40, 50))
        steps = 0
        while "cmpl-k0-0-00000000" in s.requests:
            s.update_from_output(scheduler_output=s.schedule(), model_runner_output=None)
            steps += 1
        aborted = s.requests["cmpl-k1-0-00000001"]
        aborted.status = Status.ABORTED
        s.running.remove(aborted)
        s._free_request(request=aborted, delay_free_blocks=False)
        s.shutdown()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            recs = {r["request_id"]: r for r in read_records(tmp_path / "carbon.jsonl", types=("request",))}
            if len(recs) >= 2:
                break
            time.sleep(0.05)
    finally:
        sc.stop()
    assert hook.errors == 0 and hook.steps_emitted == steps
    assert (recs["cmpl-k0-0-00000000"]["output_tokens"], recs["cmpl-k0-0-00000000"]["aborted"]) == (3, False)
    assert recs["cmpl-k1-0-00000001"]["aborted"] is True
