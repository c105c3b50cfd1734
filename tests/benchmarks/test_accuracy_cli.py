"""accuracy.py and accuracy_seeds.py refuse bad switches with exit 2 and one line naming the switch
(before any data is read)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script, args, field", [
    ("accuracy.py", ["--shrink-by", "family,precision"], "--shrink-by"),
    ("accuracy.py", ["--shrink-by", "gpu", "--inner-epochs", "0"], "--inner-epochs"),
    ("accuracy_seeds.py", ["--variants", "default,bogus"], "--variants"),
])
def test_bad_switches_exit_2_naming_the_switch(script, args, field):
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert field in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
