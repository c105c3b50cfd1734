"""The sidecar's heap settings (service/heap.py): applied on glibc Linux, left to the operator when
they set glibc's own environment variables, and in effect once a sidecar core has started."""

from __future__ import annotations

import subprocess
import sys

import pytest

from llmco2_sidecar.service import heap


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_applied_on_linux_and_the_operators_variables_win(monkeypatch):
    # in a child process: the settings are process-wide
    code = ("import sys; from llmco2_sidecar.service import heap; ok = heap.keep_freed_memory(); "
            "import numpy as np, resource\n"
            "def faults():\n"
            "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "for _ in range(3):\n"
            "    a = [np.ones(1 << 17) for _ in range(8)]; del a\n"  # 8 x 1 MB, freed
            "f0 = faults()\n"
            "for _ in range(50):\n"
            "    a = [np.ones(1 << 17) for _ in range(8)]; del a\n"
            "print(ok, faults() - f0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out[0] != "True":
        pytest.skip("not glibc")
    assert int(out[1]) < 50 * 8  # the freed megabytes are reused, not faulted in again page by page
    env_out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={"MALLOC_TRIM_THRESHOLD_": "131072", "PATH": ""}).stdout.split()
    assert env_out[0] == "False"  # the operator's setting is left alone
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert heap.keep_freed_memory() is False


def test_collector_thresholds_are_set_by_a_started_core():
    """collect_less() sets the young generation's threshold (heap.GC_THRESHOLDS); a child process, as
    the setting is process-wide."""
    code = ("import gc; from llmco2_sidecar.service import heap; before = gc.get_threshold(); heap.collect_less(); "
            "print(before, gc.get_threshold() == heap.GC_THRESHOLDS)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("True")
    assert heap.GC_THRESHOLDS[0] > 700
