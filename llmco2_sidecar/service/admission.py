"""The identity check: refuse up front whatever the prediction pipeline would refuse about an engine.

Rather than a second list of rules, :func:`check_deployment` runs the pipeline's OWN construction
for the engine's deployment -- the parallel layout against the model (the kernel graph), the memory
fit (weights and a KV cache on ``tp x pp`` GPUs), the carbon settings, and one representative
micro-batch of steps (a prefill, a decode beside a prefill chunk) through the predictor,
the request shares and the attribution, plus a small static batch -- and turns what fails into an
:class:`InputError` naming the identity field. Whatever the model and graph code learn to support
(mixture-of-experts, new dtypes) is accepted here with no change.

A deployment that passed is remembered (:class:`DeploymentCheck`), so engines of one deployment pay
once.
"""

from __future__ import annotations

import threading

import numpy as np

from ..errors import InputError
from .ingest import PHASE_CHUNK, PHASE_DECODE, PHASE_NEW, AcceptedSteps

_FIELDS = {"tp": "identity.tp", "pp": "identity.pp", "dp": "identity.dp", "gpu": "identity.gpu",
           "model": "identity.model_name", "model_type": "identity.architecture.model_type"}


def _refield(exc: InputError, field: str) -> InputError:
    return InputError(field, exc.message, exc.allowed)


def identity_field(field: str) -> str:
    """The identity field an error of the pipeline's code (``tp``, ``gpu``, ...) is about."""
    if field.startswith("identity"):
        return field
    return _FIELDS.get(field, "identity." + field.split(":")[-1])


def representative_steps() -> AcceptedSteps:
    """Two steps: a new request's 16-token prefill; then its first decode beside an 8-token chunk."""
    return AcceptedSteps(step_id=np.array([1, 2], np.int64), start_s=np.array([0.0, 0.02]),
                         end_s=np.array([0.01, 0.03]), slice_count=np.array([1, 2], np.int64),
                         request_id=["check-a", "check-a", "check-b"],
                         phase=np.array([PHASE_NEW, PHASE_DECODE, PHASE_CHUNK], np.int8),
                         new_tokens=np.array([16, 1, 8], np.int64), context_tokens=np.array([0, 16, 8], np.int64),
                         prompt_tokens=np.array([16, 16, 24], np.int64))


def check_deployment(dep, predictor, config) -> None:
    """Raise :class:`InputError` naming the identity field when the pipeline cannot account ``dep``."""
    from ..graph.builder import layer_graph
    from ..schedule import kv_capacity_tokens
    from .attribution import attribute, idle_gaps
    from .pipeline import predict_steps
    from .records import make_accounting
    from .static import static_batch_energy

    try:
        layer_graph(dep)  # the parallel layout against the model
        kv_capacity_tokens(dep)  # weights and a KV cache fit on the replica's GPUs
        acc = make_accounting(config, dep)
        st = representative_steps()
        (out,) = predict_steps(predictor, dep, [st])
        if isinstance(out, BaseException):
            raise out
        energy, prefill, duration, shares = out
        step_of = np.repeat(np.arange(st.n_steps), st.slice_count)
        e = attribute(step_of, shares, st.phase != PHASE_DECODE, np.array([False, True]), energy, prefill,
                      duration, idle_gaps(st.start_s, st.end_s, np.inf), acc.idle_power_w, acc.host_busy_w,
                      acc.formation_j, acc.n_gpus)
        if not np.isfinite(e.slice_total_j).all():
            raise ValueError("attribution gave non-finite energy")
        static_batch_energy(predictor, dep, acc, [16, 8], [2, 1], 0.05)
    except InputError as exc:
        raise _refield(exc, identity_field(exc.field)) from None
    except Exception as exc:
        raise InputError("identity", f"the prediction pipeline cannot run this deployment "
                                     f"({type(exc).__name__}: {exc})") from None


class DeploymentCheck:
    """:func:`check_deployment` with a memory of the deployments that passed (thread-safe)."""

    def __init__(self, predictor, config):
        self.predictor = predictor
        self.config = config
        self._ok: set = set()
        self._lock = threading.Lock()

    @staticmethod
    def key(dep) -> tuple:
        return (repr(dep.model), dep.gpu.gpu_id, dep.parallel)  # repr: whatever fields a ModelSpec grows

    def known(self, dep) -> bool:
        return self.key(dep) in self._ok

    def __call__(self, dep) -> None:
        k = self.key(dep)
        if k in self._ok:
            return
        check_deployment(dep, self.predictor, self.config)
        with self._lock:
            self._ok.add(k)
