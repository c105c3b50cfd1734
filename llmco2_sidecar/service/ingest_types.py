"""The records ingest hands on (dataclasses that cross from the event loop to the pipeline thread):
one engine stream's validation state, a message's accepted steps (columnar), its finishes and static
batches, and the message as a whole with its Ack (:mod:`.ingest` makes them)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

import numpy as np

from .._proto import events_pb2 as pb
from ..predictor.api import Deployment

PHASE_NEW, PHASE_CHUNK, PHASE_DECODE = 1, 2, 3


@dataclass
class StreamState:
    """What the sidecar knows about one engine (keyed by its ``instance_id``)."""

    stream_id: str
    identity: pb.EngineIdentity
    deployment: Deployment
    model_label: str
    gpu_label: str
    clock_offset_s: float  # wall = engine clock + offset
    last_step_id: int = -1
    last_end_s: float = -math.inf
    last_batch_id: int = -1
    live: set = field(default_factory=set)
    recently_done: "OrderedDict[str, None]" = field(default_factory=OrderedDict)
    version: int = 0  # bumped by every message ingested (a checkpoint reuses an unchanged stream's entry)

    def forget_done(self, limit: int = 100_000) -> None:
        while len(self.recently_done) > limit:
            self.recently_done.popitem(last=False)


@dataclass
class AcceptedSteps:
    """Accepted steps of one message, columnar (S steps, R slices)."""

    step_id: np.ndarray  # int64 [S]
    start_s: np.ndarray  # float64 [S] engine clock
    end_s: np.ndarray  # float64 [S]
    slice_count: np.ndarray  # int64 [S]
    request_id: list  # str [R]
    phase: np.ndarray  # int8 [R] 1 new prefill, 2 chunk, 3 decode
    new_tokens: np.ndarray  # int64 [R]
    context_tokens: np.ndarray  # int64 [R]
    prompt_tokens: np.ndarray  # int64 [R]
    #: the distinct request ids (a set or a dict's keys view) when ingest has them; None:
    #: ``set(request_id)`` where needed (the pipeline's micro-batch checks and ledger slots take
    #: a message's ~80 distinct ids instead of hashing its ~1,000 slices again)
    distinct: "AbstractSet[str] | None" = None

    @property
    def n_steps(self) -> int:
        return int(self.step_id.shape[0])


@dataclass(frozen=True)
class DoneEvent:
    request_id: str
    aborted: bool
    output_tokens: int
    prompt_tokens: int
    time_s: float  # engine clock; 0 = unknown
    client_request_id: str = ""  # the id the client knows it by (X-Request-Id); "" unknown


@dataclass(frozen=True)
class StaticBatchEvent:
    batch_id: int
    start_s: float
    end_s: float
    request_id: tuple
    prompt_tokens: tuple
    output_tokens: tuple


@dataclass
class Ingested:
    """One message after validation: what the pipeline must process, and the Ack to send."""

    stream: StreamState
    steps: AcceptedSteps | None
    done: list
    batches: list
    ack: pb.Ack
    #: set by Pipeline.submit: it holds finishes that nobody waited for then (records on demand)
    lazy_done: bool = False
    #: every rejected item of the message by offending field (None: none); the Ack lists the first 16
    rejected_by_field: dict | None = None
