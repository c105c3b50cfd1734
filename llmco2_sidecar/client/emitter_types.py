"""The emitter's records that cross its boundary: the engine's identity, the settings and the counters
(:mod:`llmco2_sidecar.client.emitter`)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from .._proto import events_pb2 as pb

class Phase:
    """Phase codes of a request slice (``events.proto`` ``Phase``)."""

    UNSPECIFIED = 0  # the sidecar derives it from the token counts
    PREFILL_NEW = 1
    PREFILL_CHUNK = 2
    DECODE = 3


# every ModelArchitecture field (dense, experts, MLA, local attention, number formats)
_ARCH_FIELDS = tuple(pb.ModelArchitecture.DESCRIPTOR.fields_by_name)


@dataclass
class EngineInfo:
    """The engine's identity, sent first on every connection.

    ``architecture`` is optional: a mapping with the ``ModelArchitecture`` field names
    (``hidden_size``, ``intermediate_size``, ``num_layers``, ``num_heads``, ``num_kv_heads``,
    ``head_dim``, ``vocab_size``, ``weight_bits``, ...). Without it the sidecar resolves
    ``model_name`` in its model catalog.
    """

    engine_name: str = "engine"
    engine_version: str = ""
    model_name: str = ""
    gpu: str = ""
    gpu_count: int = 0
    tp: int = 1
    pp: int = 1
    dp: int = 1
    dp_rank: int = 0
    architecture: Mapping[str, Any] | None = None
    ep: int = 1  # expert-parallel size (vLLM --enable-expert-parallel: tp x dp)
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def architecture_from_spec(cls, spec: Any) -> dict[str, Any]:
        """Architecture fields from a :class:`llmco2_sidecar.models.spec.ModelSpec`."""
        return {f: getattr(spec, f) for f in _ARCH_FIELDS if hasattr(spec, f)}

    def to_proto(self, engine_clock_s: float, wall_clock_s: float) -> pb.EngineMessage:
        ident = pb.EngineIdentity(
            engine_name=self.engine_name, engine_version=self.engine_version, instance_id=self.instance_id,
            model_name=self.model_name, gpu=self.gpu, gpu_count=int(self.gpu_count), tp=int(self.tp),
            pp=int(self.pp), dp=int(self.dp), dp_rank=int(self.dp_rank), ep=int(self.ep),
            engine_clock_at_open_s=engine_clock_s, wall_clock_at_open_s=wall_clock_s,
        )
        if self.architecture:
            arch = {k: v for k, v in dict(self.architecture).items() if k in _ARCH_FIELDS and v is not None}
            ident.architecture.CopyFrom(pb.ModelArchitecture(**arch))
        return pb.EngineMessage(identity=ident)


@dataclass
class EmitterConfig:
    """Settings of the emitter.

    Attributes:
        target: ``host:port`` or ``unix:/path`` of the sidecar.
        max_buffered_events: events (steps, done, batches) queued before new ones are dropped.
        max_message_steps: most events coalesced into one message.
        max_inflight_messages: messages sent but not yet acknowledged before the sender waits.
        min_send_interval_s: at high step rates, the sender waits this long after its previous
            message so that the next one carries more steps (Nagle-like; an engine sending
            less often than this is never delayed).
        steps_hold_s: a message of steps alone (no finish, abort or static batch among them) is
            held until its oldest step has waited this long (default 50 ms), or until
            ``max_message_steps`` are queued; a finish, abort or static batch is sent at once with
            the steps queued before it, and ``flush``/``close`` send at once. Nothing waits on a
            step alone (no record needs it before its request's finish), and at low step rates
            each message costs the sidecar far more than each step in it (the gRPC floor alone is
            about 0.4 ms of its CPU per message: benchmarks/results/grpc_floor.md). 0: every
            drain is sent after ``min_send_interval_s`` (the behaviour before 2026-12-07).
        backoff_initial_s, backoff_max_s: reconnection delays (doubling, with jitter).
        token: bearer token sent as ``authorization`` metadata.
        tls_root_cert: PEM bytes or path of the CA that signed the sidecar's certificate (TLS on).
        tls_server_name: override the name checked against the certificate.
        log_interval_s: drops and connection errors are logged at most this often.
        clock: the engine clock the step times use.
        wall_clock: wall time (``time.time``) sent with the identity to map the engine clock; a
            replay (the demo) passes the trace's own time.
        client_request_id: a function from an engine request id to the id the client sees (vLLM:
            ``cmpl-my-id-0-9bf73448`` -> ``my-id``, its X-Request-Id), applied on the sender thread
            to every finish that has none of its own; None: finishes carry only the engine id.
    """

    target: str = "127.0.0.1:50551"
    max_buffered_events: int = 100_000
    max_message_steps: int = 256
    max_inflight_messages: int = 64
    min_send_interval_s: float = 0.005
    steps_hold_s: float = 0.05
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    token: str | None = None
    tls_root_cert: bytes | str | None = None
    tls_server_name: str | None = None
    log_interval_s: float = 30.0
    clock: Any = time.monotonic
    wall_clock: Any = time.time
    client_request_id: Any = None


@dataclass
class EmitterStats:
    """Counters since the emitter started (events: steps, done events and static batches)."""

    emitted: int = 0
    dropped: int = 0
    sent_messages: int = 0
    acked_messages: int = 0
    steps_accepted: int = 0
    steps_rejected: int = 0
    done_accepted: int = 0
    done_rejected: int = 0
    batches_accepted: int = 0
    batches_rejected: int = 0
    flagged: int = 0
    connects: int = 0
    connection_errors: int = 0
    connected: bool = False
    queued: int = 0
    inflight_messages: int = 0
    stream_id: str = ""
    last_error: str = ""
    rejection_reasons: dict[str, int] = field(default_factory=dict)
