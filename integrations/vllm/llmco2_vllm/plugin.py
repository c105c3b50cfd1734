"""vLLM general plugin entry point (``vllm.general_plugins``: ``llmco2_sidecar``).

vLLM calls :func:`register` once in each of its processes (API server, EngineCore, workers).
With ``LLMCO2_SIDECAR`` unset it returns at once: nothing imported, no thread, no patch. Set, it

* in the first process that sees ``LLMCO2_SIDECAR=auto``: starts ``llmco2 serve`` on a private
  Unix socket (:mod:`llmco2_vllm.autostart`) and rewrites the variable to that address, so the
  EngineCore and worker processes it spawns inherit it;
* wraps the v1 scheduler (:mod:`llmco2_vllm.patch`): in the EngineCore process this sends one step
  event per engine step and the finish/abort events; elsewhere the wrapper is never called;
* wraps vLLM's argument parser so that the OpenAI server adds
  :class:`llmco2_vllm.middleware.CarbonMiddleware` (carbon in the responses).

Which vLLM it runs on is decided by feature detection (:mod:`llmco2_vllm.compat`): a vLLM lacking a
scheduler method or ``SchedulerOutput`` field the hook reads gets one log line naming it and runs
unhooked; one outside the tested releases gets one warning and is hooked. Loading twice (or in
several processes) is safe: every step is idempotent.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("vllm.llmco2")

_state = {"registered": False}


def register() -> None:
    """The plugin's entry point: does nothing unless ``LLMCO2_SIDECAR`` is set."""
    if not os.environ.get("LLMCO2_SIDECAR", "").strip():
        return
    if _state["registered"]:
        return
    _state["registered"] = True
    try:
        _register()
    except Exception as exc:  # a broken plugin must not stop vLLM
        log.warning("llmco2: plugin failed to load (%r); vLLM runs without carbon accounting", exc, exc_info=exc)


def _register() -> None:
    import vllm

    from .compat import check

    if not check(str(getattr(vllm, "__version__", ""))):
        return
    from .autostart import resolve_target

    target = resolve_target()
    if not target:
        return
    from .patch import patch_api_server_args, patch_scheduler
    from .settings import Settings

    settings = Settings.from_env()
    if settings is None:
        return
    patch_scheduler(settings)
    try:
        patch_api_server_args()
    except Exception as exc:
        log.warning("llmco2: response middleware not installed automatically (%r); pass "
                    "--middleware llmco2_vllm.middleware.CarbonMiddleware", exc)

