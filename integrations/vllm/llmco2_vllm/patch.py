"""Where the plugin attaches to vLLM (v1 engine; which releases it hooks: :mod:`llmco2_vllm.compat`).

Why patch ``vllm.v1.core.sched.scheduler.Scheduler`` methods rather than ``--scheduler-cls``:
the general plugin is loaded at the top of ``EngineCore.__init__``, before the scheduler is built,
so wrapping the base class there hooks whatever scheduler vLLM picks (``Scheduler``,
``AsyncScheduler`` when async scheduling is on, or a user's ``--scheduler-cls`` subclass that calls
``super()``), needs no extra flag (one switch), and leaves ``--scheduler-cls`` to the user. A
``--scheduler-cls`` of our own would replace the user's choice and the async-scheduling default.

Wrapped: ``__init__`` (creates the per-scheduler :class:`~llmco2_vllm.hook.StepHook` and its
emitter), ``schedule``, ``update_from_output``, ``_free_request`` (every finish and abort passes
through it) and ``shutdown``. Each wrapper calls vLLM's method unchanged and catches everything the
hook raises. Patching twice is a no-op.

The API server side: ``FlexibleArgumentParser.parse_args`` is wrapped so that the parsed
arguments' ``middleware`` list gains :class:`llmco2_vllm.middleware.CarbonMiddleware` (vLLM's own
``--middleware`` mechanism, present in every version); passing ``--middleware`` by hand works too
and is not duplicated.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from .settings import Settings

log = logging.getLogger("vllm.llmco2")

MIDDLEWARE_PATH = "llmco2_vllm.middleware.CarbonMiddleware"
_MARK = "_llmco2_patched"


def patch_scheduler(settings: Settings, scheduler_cls: Any = None) -> bool:
    """Wrap the v1 scheduler's methods. False (and one log line naming what is missing) when the class
    lacks a method or has one of another shape (:func:`llmco2_vllm.compat.scheduler_missing`)."""
    if scheduler_cls is None:
        from vllm.v1.core.sched.scheduler import Scheduler as scheduler_cls  # noqa: N813
    if getattr(scheduler_cls, _MARK, False):
        return True
    from .compat import first_argument, scheduler_missing

    missing = scheduler_missing(scheduler_cls)
    if missing:
        log.warning("llmco2: vLLM's scheduler lacks what the step hook reads: %s; running unhooked",
                    "; ".join(missing))
        return False
    # vLLM passes these positionally today; by keyword they are found under vLLM's own parameter names
    so_name = first_argument(scheduler_cls.update_from_output)
    request_name = first_argument(scheduler_cls._free_request)

    orig_init = scheduler_cls.__init__
    orig_schedule = scheduler_cls.schedule
    orig_update = scheduler_cls.update_from_output
    orig_free = scheduler_cls._free_request
    orig_shutdown = getattr(scheduler_cls, "shutdown", None)

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        self._llmco2_hook = None
        try:
            from .engine import make_hook

            self._llmco2_hook = make_hook(self, settings)
        except Exception as exc:  # never break the engine's start
            log.warning("llmco2: could not start the step hook (%r); running unhooked", exc, exc_info=exc)

    @functools.wraps(orig_schedule)
    def schedule(self, *args, **kwargs):
        hook = self.__dict__.get("_llmco2_hook")
        if hook is None:
            return orig_schedule(self, *args, **kwargs)
        t0 = hook.clock()
        out = orig_schedule(self, *args, **kwargs)
        try:
            hook.after_schedule(self, out, t0)
        except Exception as exc:
            hook.failed("schedule", exc)
        return out

    @functools.wraps(orig_update)
    def update_from_output(self, *args, **kwargs):
        hook = self.__dict__.get("_llmco2_hook")
        if hook is not None:
            try:
                hook.before_update(args[0] if args else kwargs[so_name])
            except Exception as exc:
                hook.failed("update_from_output", exc)
        return orig_update(self, *args, **kwargs)

    @functools.wraps(orig_free)
    def _free_request(self, *args, **kwargs):
        hook = self.__dict__.get("_llmco2_hook")
        if hook is not None:
            try:
                hook.on_free(args[0] if args else kwargs[request_name])
            except Exception as exc:
                hook.failed("_free_request", exc)
        return orig_free(self, *args, **kwargs)

    scheduler_cls.__init__ = __init__
    scheduler_cls.schedule = schedule
    scheduler_cls.update_from_output = update_from_output
    scheduler_cls._free_request = _free_request

    if orig_shutdown is not None:
        @functools.wraps(orig_shutdown)
        def shutdown(self, *args, **kwargs):
            hook = self.__dict__.get("_llmco2_hook")
            self._llmco2_hook = None
            if hook is not None:
                try:
                    hook.close(timeout_s=2.0)
                except Exception as exc:
                    log.warning("llmco2: closing the emitter failed: %r", exc)
            return orig_shutdown(self, *args, **kwargs)

        scheduler_cls.shutdown = shutdown
    setattr(scheduler_cls, _MARK, True)
    return True


def patch_api_server_args(parser_cls: Any = None) -> bool:
    """Make vLLM's OpenAI server add :class:`CarbonMiddleware` (through its ``--middleware`` list)."""
    if parser_cls is None:
        try:
            from vllm.utils.argparse_utils import FlexibleArgumentParser as parser_cls  # noqa: N813
        except ImportError:  # vLLM < 0.11 kept it in vllm.utils
            from vllm.utils import FlexibleArgumentParser as parser_cls  # noqa: N813
    if getattr(parser_cls, _MARK, False):
        return True
    orig_parse_args = parser_cls.parse_args

    @functools.wraps(orig_parse_args)
    def parse_args(self, *args, **kwargs):
        ns = orig_parse_args(self, *args, **kwargs)
        try:
            add_middleware(ns)
        except Exception as exc:  # never break argument parsing
            log.warning("llmco2: could not add the response middleware (%r); pass --middleware %s",
                        exc, MIDDLEWARE_PATH)
        return ns

    parser_cls.parse_args = parse_args
    setattr(parser_cls, _MARK, True)
    return True


def add_middleware(ns: Any) -> bool:
    """Append the middleware to a parsed namespace that has vLLM's ``middleware`` list."""
    current = getattr(ns, "middleware", None)
    if current is None or not isinstance(current, list):
        return False
    if MIDDLEWARE_PATH not in current:
        ns.middleware = [*current, MIDDLEWARE_PATH]  # a new list: the parser's default stays untouched
    return True
