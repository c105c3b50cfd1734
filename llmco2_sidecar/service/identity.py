"""The engine identity: the first message of a stream, resolved to a deployment (model, GPUs,
parallel layout) or refused with an :class:`InputError` naming the field. Identities are rare (one
per stream), so this is plain Python; :mod:`.admission` then runs the pipeline's own construction
for the deployment (``check``)."""

from __future__ import annotations

import math

from .._proto import events_pb2 as pb
from ..errors import InputError
from ..predictor.api import Deployment
from ..workload import Parallelism


def deployment_from_identity(ident: pb.EngineIdentity, hardware: str | None = None) -> tuple[Deployment, str, str]:
    """Resolve the identity's model and GPU. Raises :class:`InputError` naming the field."""
    from ..hardware.catalog import load_gpu

    tp, pp, dp, ep = ident.tp or 1, ident.pp or 1, ident.dp or 1, ident.ep or 1
    for name, value in (("identity.tp", tp), ("identity.pp", pp), ("identity.dp", dp), ("identity.ep", ep)):
        if value > 4096:
            raise InputError(name, f"absurd value {value}", "1..4096")
    if ident.gpu_count and ident.gpu_count != tp * pp:
        raise InputError("identity.gpu_count", f"{ident.gpu_count} GPUs but tp*pp = {tp * pp}", "0 or tp*pp")
    if not ident.gpu:
        raise InputError("identity.gpu", "missing: the GPU type of the replica", "a GPU catalog id or alias")
    try:
        gpu = load_gpu(ident.gpu, hardware) if hardware else load_gpu(ident.gpu)
    except InputError as exc:
        raise InputError("identity.gpu", exc.message, exc.allowed) from None
    if ident.HasField("architecture") and ident.architecture.hidden_size:
        from ..models.identity import spec_from_architecture

        model = spec_from_architecture(ident.architecture, name=ident.model_name or ident.architecture.model_type or "model")
    elif ident.model_name:
        from ..models.catalog import load_model

        try:
            model = load_model(ident.model_name)
        except InputError as exc:
            raise InputError("identity.model_name", exc.message, exc.allowed) from None
    else:
        raise InputError("identity.model_name", "missing: send a model name or the architecture fields")
    try:
        par = Parallelism(tp=int(tp), pp=int(pp), dp=int(dp), ep=int(ep))
    except InputError as exc:
        raise InputError("identity." + exc.field, exc.message, exc.allowed) from None
    dep = Deployment(model=model, gpu=gpu, parallel=par)
    from ..graph.builder import check_deployment

    try:  # a split the kernel graph cannot cost (tp not dividing the heads or the experts' width, ...)
        check_deployment(dep)
    except InputError as exc:
        raise InputError("identity." + exc.field, exc.message, exc.allowed) from None
    return dep, ident.model_name or model.name, gpu.gpu_id


def open_stream(ident: pb.EngineIdentity, streams: dict, hardware: str | None = None,
                check=None):
    """Validate an identity and return the (new or resumed) stream state. ``check(deployment)``
    (:class:`~.admission.DeploymentCheck`) runs the pipeline's own construction for it first."""
    if not ident.engine_name:
        raise InputError("identity.engine_name", "missing", "e.g. 'vllm'")
    if len(ident.instance_id) > 256:
        raise InputError("identity.instance_id", "longer than 256 characters")
    for name in ("engine_clock_at_open_s", "wall_clock_at_open_s"):
        if not math.isfinite(getattr(ident, name)):
            raise InputError(f"identity.{name}", "not a finite number")
    dep, model_label, gpu_label = deployment_from_identity(ident, hardware)
    if check is not None:
        check(dep)
    offset = (ident.wall_clock_at_open_s - ident.engine_clock_at_open_s) if ident.wall_clock_at_open_s else 0.0
    key = ident.instance_id or f"anon-{len(streams)}"
    state = streams.get(key)
    if state is not None and state.deployment == dep:
        state.identity = ident
        state.clock_offset_s = offset
        return state
    from .ingest import StreamState

    state = StreamState(stream_id=key, identity=ident, deployment=dep, model_label=model_label,
                        gpu_label=gpu_label, clock_offset_s=offset)
    streams[key] = state
    return state
