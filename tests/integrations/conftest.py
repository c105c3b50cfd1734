"""Make the integration helpers (llmco2_e2e_harness, tiny_llama) importable under --import-mode=importlib,
and give the real-vLLM tests their environment (``vllm_python``)."""

import os
import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """The python of ``.venv-vllm`` (built by tools/vllm_env.sh if missing); skipped with
    LLMCO2_SKIP_E2E=1, a failure (not a skip) when it cannot be built."""
    from llmco2_e2e_harness import HarnessError, ensure_vllm_env

    if os.environ.get("LLMCO2_SKIP_E2E") == "1":
        pytest.skip("LLMCO2_SKIP_E2E=1: the vLLM end-to-end test was skipped on purpose")
    try:
        return ensure_vllm_env()
    except HarnessError as exc:
        pytest.fail(f"cannot build the vLLM e2e environment (set LLMCO2_SKIP_E2E=1 to skip on purpose): {exc}")
