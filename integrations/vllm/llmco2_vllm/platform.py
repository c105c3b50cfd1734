"""Whether vLLM runs on its CPU platform (a test engine): then the step times the hook reports are a
CPU's, and the energy and carbon the sidecar predicts from them, for the GPU named by ``LLMCO2_GPU``,
are not what that GPU would use. The plugin says so once in the log and in every response
(``x-llmco2-note`` header, ``note`` in the final SSE event)."""

from __future__ import annotations

import functools
import logging

log = logging.getLogger("vllm.llmco2")

CPU_NOTE = "vLLM runs on the CPU platform: step times are a CPU's, so these figures are not a GPU's"


@functools.lru_cache(maxsize=1)
def on_cpu_platform() -> bool:
    """True when vLLM's current platform is its CPU platform (False when it cannot tell)."""
    try:
        from vllm.platforms import current_platform

        is_cpu = getattr(current_platform, "is_cpu", None)
        if callable(is_cpu):
            return bool(is_cpu())
        return str(getattr(current_platform, "device_type", "")).lower() == "cpu"
    except Exception:  # no vLLM, or a platform probe that fails: say nothing rather than guess
        return False


def platform_note() -> str:
    """The note responses and the log carry ('' on a GPU platform)."""
    return CPU_NOTE if on_cpu_platform() else ""
