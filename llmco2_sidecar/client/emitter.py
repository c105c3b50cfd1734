"""The engine-side emitter: engine steps to the sidecar without ever blocking the engine.

Usage (inside an engine's scheduler loop)::

    em = Emitter(EngineInfo(engine_name="vllm", model_name="meta-llama/Llama-2-7b-hf",
                            gpu="A100-SXM4-80GB", tp=1), EmitterConfig(target="127.0.0.1:50551"))
    em.emit_step(step_id, start_s, end_s, request_ids, new_tokens, context_tokens, prompt_tokens)
    em.emit_done(request_id, output_tokens=n)
    em.close(timeout_s=2.0)

(``emit_step_deferred`` queues a step whose columns the sender thread reads later from the engine's
own step record: the vLLM hook uses it, so the engine's thread does no per-request work.)

The ``emit_*`` calls only append one tuple to a bounded deque (about a microsecond; no protobuf,
no lock, no system call except when the sender thread is asleep). The sequences passed in are
owned by the emitter from then on: do not mutate them afterwards. A background thread drains the
deque, builds one columnar ``EventBatch`` per drain (coalescing everything queued, up to
``max_message_steps`` steps) and sends it over ONE ``StreamEvents`` call. Steps alone are held up to
``steps_hold_s`` (50 ms) for company; a finish, abort or static batch goes at once with the steps
before it (its record is awaited), so at low step rates the sidecar gets a message per finish or
per 50 ms rather than one per step. Messages stay in an
in-flight table until the sidecar acknowledges them (its ack means "in my journal"; the identity
asks for cumulative acks, one Ack for several messages, which a sidecar sends within its
``--ack-interval-ms``; an older sidecar acknowledges every message, which works the same); after a
reconnection the in-flight messages are sent again first (the sidecar rejects the ones it already
has as duplicates, keyed by ``instance_id`` and step id), so an outage loses nothing as long as the
buffer bound holds. When the deque is full, new events are dropped, counted in
:attr:`EmitterStats.dropped` and logged at most every ``log_interval_s``.

Times are seconds on the engine's clock (``time.monotonic()`` by default); the identity sent at
each (re)connection maps that clock to wall time.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from typing import Any, Callable, Sequence

import grpc

from .._proto import events_pb2 as pb
from .._proto import sidecar_pb2_grpc
from .emitter_build import _BATCH, _DEFERRED, _DONE, _STEP, awaited, build_message
from .emitter_types import EmitterConfig, EmitterStats, EngineInfo, Phase  # noqa: F401  (re-exported)
from ..threadnames import name_os_thread

log = logging.getLogger("llmco2.emitter")


class _Conn:
    __slots__ = ("dead", "call")

    def __init__(self) -> None:
        self.dead = False
        self.call = None


class Emitter:
    """Non-blocking step emitter (see the module docstring)."""

    def __init__(self, info: EngineInfo, config: EmitterConfig | None = None, *, start: bool = True):
        self.info = info
        self.config = config or EmitterConfig()
        self._q: collections.deque = collections.deque()
        self._bound = int(self.config.max_buffered_events)
        self._idle = False
        self._holding = False  # the sender holds steps alone: a finish, abort or batch wakes it
        self._flushes = 0  # flush() calls: a hold ends at the next one
        # a binary semaphore (a C lock held while nobody signalled): waking the sender costs an
        # emit one lock release, once per message, not a Python-level Condition per step
        self._gate = threading.Lock()
        self._gate.acquire()
        self._lock = threading.Lock()  # guards _inflight and the stats written by both threads
        self._acked = threading.Condition(self._lock)
        self._inflight: collections.OrderedDict[int, tuple[pb.EngineMessage, int]] = collections.OrderedDict()
        self._seq = 0
        self._emitted = 0
        self._dropped = 0  # buffer full (engine thread only)
        self._dropped_malformed = 0  # the wire cannot carry them (sender thread only)
        self._acked_events = 0
        self._stats = EmitterStats()
        self._closing = False
        self._stopped = threading.Event()
        self._last_drop_log = 0.0
        self._last_err_log = 0.0
        self._channel: grpc.Channel | None = None
        self._conn: _Conn | None = None
        self._thread = threading.Thread(target=self._run, name="llmco2-emitter", daemon=True)
        if start:
            self._thread.start()

    # ---- hot path (engine thread) --------------------------------------------------------------
    # Each emit_* inlines the same enqueue (bound check, append, count, wake) rather than calling a
    # shared helper: one Python call less per event on the engine's thread.
    def emit_step(self, step_id: int, start_s: float, end_s: float, request_ids: Sequence[str],
                  new_tokens: Sequence[int], context_tokens: Sequence[int], prompt_tokens: Sequence[int],
                  phases: Sequence[int] | None = None) -> bool:
        """Queue one engine step (parallel sequences over its requests). False if dropped."""
        if len(self._q) >= self._bound:
            return self._drop()
        self._q.append((_STEP, step_id, start_s, end_s, request_ids, new_tokens, context_tokens, prompt_tokens, phases))
        self._emitted += 1
        if self._idle:
            self._signal()
        return True

    def emit_step_deferred(self, step_id: int, start_s: float, end_s: float,
                           read: Callable[[Any], tuple[Sequence[str], Sequence[int], Sequence[int], Sequence[int]]],
                           source: Any) -> bool:
        """Queue one engine step whose columns are read later, on the sender thread: ``read(source)``
        returns ``(request_ids, new_tokens, context_tokens, prompt_tokens)``. For engines whose own
        step record (``source``) stays unchanged after the step: the engine's thread then pays for
        no per-request work. ``read`` must not raise; if it does, the step is dropped and counted
        as malformed. False if dropped (buffer full)."""
        if len(self._q) >= self._bound:
            return self._drop()
        self._q.append((_DEFERRED, step_id, start_s, end_s, read, source))
        self._emitted += 1
        if self._idle:
            self._signal()
        return True

    def emit_done(self, request_id: str, output_tokens: int = 0, aborted: bool = False, time_s: float = 0.0,
                  prompt_tokens: int = 0, client_request_id: str = "") -> bool:
        """Queue a request's finish (or abort); ``client_request_id``: the id its client knows it by
        (default: the config's ``client_request_id`` function of ``request_id``). False if dropped."""
        if len(self._q) >= self._bound:
            return self._drop()
        self._q.append((_DONE, request_id, output_tokens, aborted, time_s, prompt_tokens, client_request_id))
        self._emitted += 1
        if self._idle or self._holding:
            self._signal()
        return True

    def emit_static_batch(self, batch_id: int, start_s: float, end_s: float, request_ids: Sequence[str],
                          prompt_tokens: Sequence[int], output_tokens: Sequence[int]) -> bool:
        """Queue a static batch (requests that ran together start to end). False if dropped."""
        if len(self._q) >= self._bound:
            return self._drop()
        self._q.append((_BATCH, batch_id, start_s, end_s, request_ids, prompt_tokens, output_tokens))
        self._emitted += 1
        if self._idle or self._holding:
            self._signal()
        return True

    def _signal(self) -> None:
        self._idle = False
        try:
            self._gate.release()
        except RuntimeError:  # already signalled
            pass

    def _drop(self) -> bool:
        self._dropped += 1
        now = time.monotonic()
        if now - self._last_drop_log >= self.config.log_interval_s:
            self._last_drop_log = now
            log.warning("llmco2 emitter: buffer full (%d events), %d events dropped so far; is the sidecar at %s up?",
                        self._bound, self._dropped, self.config.target)
        return False

    # ---- control -----------------------------------------------------------------------------
    def stats(self) -> EmitterStats:
        with self._lock:
            s = EmitterStats(**{k: getattr(self._stats, k) for k in self._stats.__dataclass_fields__})
            s.rejection_reasons = dict(self._stats.rejection_reasons)
            s.inflight_messages = len(self._inflight)
        s.emitted, s.dropped, s.queued = self._emitted, self._dropped + self._dropped_malformed, len(self._q)
        return s

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until everything emitted so far is acknowledged (or was dropped). True if in time."""
        target = self._emitted
        deadline = time.monotonic() + timeout_s
        self._flushes += 1  # a held message goes now
        self._signal()
        while True:
            with self._lock:
                if self._acked_events + self._dropped + self._dropped_malformed >= target:
                    return True
                if time.monotonic() >= deadline:
                    return False
                self._acked.wait(timeout=0.01)
            self._signal()

    def close(self, timeout_s: float = 2.0) -> bool:
        """Flush for up to ``timeout_s``, then stop. True if nothing was left unsent."""
        flushed = self.flush(timeout_s) if self._thread.is_alive() else (not self._q and not self._inflight)
        self._closing = True
        self._flushes += 1
        self._signal()
        self._stopped.set()
        self._thread.join(timeout=max(0.5, timeout_s))
        conn = self._conn
        if self._thread.is_alive() and conn is not None and conn.call is not None:
            conn.call.cancel()  # a sidecar that stopped answering: do not keep the call open
            self._thread.join(timeout=1.0)
        if self._channel is not None:
            self._channel.close()
        left = len(self._q) + sum(n for _, n in self._inflight.values())
        if left:
            log.warning("llmco2 emitter: closed with %d events not acknowledged by the sidecar", left)
        return flushed and not left

    def __enter__(self) -> "Emitter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- sender thread -------------------------------------------------------------------------
    def _make_channel(self) -> grpc.Channel:
        cfg = self.config
        options = [("grpc.keepalive_time_ms", 10_000), ("grpc.max_receive_message_length", 64 << 20),
                   ("grpc.max_send_message_length", 64 << 20), ("grpc.initial_reconnect_backoff_ms", 50),
                   ("grpc.max_reconnect_backoff_ms", int(cfg.backoff_max_s * 1000))]
        if cfg.tls_server_name:
            options.append(("grpc.ssl_target_name_override", cfg.tls_server_name))
        if cfg.tls_root_cert is not None:
            root = cfg.tls_root_cert
            if isinstance(root, str):
                with open(root, "rb") as fh:
                    root = fh.read()
            return grpc.secure_channel(cfg.target, grpc.ssl_channel_credentials(root_certificates=root), options)
        return grpc.insecure_channel(cfg.target, options)

    def _run(self) -> None:
        name_os_thread("llmco2-emitter")  # top -H in the engine's process shows it
        backoff = self.config.backoff_initial_s
        self._channel = self._make_channel()
        stub = sidecar_pb2_grpc.CarbonSidecarStub(self._channel)
        metadata = [("authorization", f"Bearer {self.config.token}")] if self.config.token else None
        while not self._stopped.is_set():
            conn = self._conn = _Conn()
            got_ack = [False]
            try:
                call = stub.StreamEvents(self._requests(conn), metadata=metadata)
                conn.call = call
                for ack in call:
                    if not got_ack[0]:
                        got_ack[0] = True
                        backoff = self.config.backoff_initial_s
                        with self._lock:
                            self._stats.connects += 1
                            self._stats.connected = True
                            self._stats.stream_id = ack.stream_id
                    self._on_ack(ack)
                if self._closing and not self._q and not self._inflight:
                    break
            except grpc.RpcError as exc:
                code = exc.code() if hasattr(exc, "code") else None
                detail = exc.details() if hasattr(exc, "details") else str(exc)
                self._note_error(f"{code.name if code else 'ERROR'}: {detail}")
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    backoff = self.config.backoff_max_s  # our identity is bad: retry slowly
            except Exception as exc:  # never let the sender thread die
                self._note_error(f"{type(exc).__name__}: {exc}")
            finally:
                conn.dead = True
                with self._lock:
                    self._stats.connected = False
                if conn.call is not None:
                    conn.call.cancel()
            if self._stopped.is_set():
                break
            delay = backoff * (0.5 + random.random())
            backoff = min(self.config.backoff_max_s, backoff * 2) if not got_ack[0] else self.config.backoff_initial_s
            self._stopped.wait(delay)

    def _note_error(self, text: str) -> None:
        with self._lock:
            self._stats.connection_errors += 1
            self._stats.last_error = text
        now = time.monotonic()
        if now - self._last_err_log >= self.config.log_interval_s:
            self._last_err_log = now
            log.warning("llmco2 emitter: sidecar %s unreachable (%s); buffering (%d queued, %d dropped)",
                        self.config.target, text, len(self._q), self._dropped)

    def _on_ack(self, ack: pb.Ack) -> None:
        with self._lock:
            s = self._stats
            if ack.acked_through_seq:  # a cumulative ack: every message up to that seq
                inflight, through = self._inflight, ack.acked_through_seq
                while inflight:
                    seq = next(iter(inflight))
                    if seq > through:
                        break
                    s.acked_messages += 1
                    self._acked_events += inflight.pop(seq)[1]
            elif ack.seq:
                entry = self._inflight.pop(ack.seq, None)
                if entry is not None:
                    s.acked_messages += 1
                    self._acked_events += entry[1]
            s.steps_accepted += ack.steps_accepted
            s.steps_rejected += ack.steps_rejected
            s.done_accepted += ack.done_accepted
            s.done_rejected += ack.done_rejected
            s.batches_accepted += ack.batches_accepted
            s.batches_rejected += ack.batches_rejected
            s.flagged += ack.flagged
            for r in ack.rejections:
                key = f"{r.field}: {r.reason}"
                s.rejection_reasons[key] = s.rejection_reasons.get(key, 0) + 1
            self._acked.notify_all()

    def _requests(self, conn: _Conn):
        """The request iterator of one connection (runs on a gRPC thread)."""
        hello = self.info.to_proto(self.config.clock(), self.config.wall_clock())
        hello.identity.cumulative_acks = True  # _on_ack takes one Ack for several messages
        yield hello
        with self._lock:
            resend = [msg for msg, _ in self._inflight.values()]
        for msg in resend:
            if conn.dead:
                return
            yield msg
        max_inflight = self.config.max_inflight_messages
        linger = self.config.min_send_interval_s
        hold_s = float(self.config.steps_hold_s)
        max_steps = self.config.max_message_steps
        last_send = 0.0
        while not conn.dead:
            if len(self._inflight) >= max_inflight:
                with self._lock:
                    self._acked.wait(timeout=0.05)
                continue
            items = self._drain()
            if items:
                if hold_s > 0 and len(items) < max_steps and not awaited(items):
                    self._hold(items, hold_s, max_steps, conn)
                gap = time.monotonic() - last_send
                if gap < linger and len(items) < max_steps:
                    time.sleep(linger - gap)  # the sender's own thread: the engine never waits here
                    items.extend(self._drain(max_steps - len(items)))
                last_send = time.monotonic()
                try:
                    msg, n = build_message(items, self.config.client_request_id)
                except (TypeError, ValueError, OverflowError) as exc:
                    msg, n = self._build_valid(items, exc)
                    if msg is None:
                        continue
                with self._lock:
                    self._seq += 1
                    msg.events.seq = self._seq
                    self._inflight[self._seq] = (msg, n)
                    self._stats.sent_messages += 1
                yield msg
                continue
            if self._closing and not self._inflight:
                return
            self._idle = True  # the next emit wakes us
            if not self._q:
                self._gate.acquire(timeout=0.05)
            self._idle = False

    def _hold(self, items: list, hold_s: float, max_steps: int, conn: _Conn) -> None:
        """Hold ``items`` (steps alone) for company: add what is queued until a finish, abort or
        static batch comes (sent at once, with the steps before it), ``max_message_steps`` are
        queued, ``hold_s`` has passed, or a flush or close asks for everything now."""
        deadline = time.monotonic() + hold_s
        flushes = self._flushes
        self._holding = True  # before the drain below: a finish queued meanwhile is seen by one of the two
        try:
            while True:
                more = self._drain(max_steps - len(items))
                if more:
                    items.extend(more)
                    if len(items) >= max_steps or awaited(more):
                        return
                left = deadline - time.monotonic()
                if left <= 0 or conn.dead or self._closing or self._flushes != flushes:
                    return
                self._gate.acquire(timeout=left)  # woken by a finish, a batch, a flush or a close
        finally:
            self._holding = False

    def _drain(self, limit: int | None = None) -> list:
        q = self._q
        out = []
        limit = self.config.max_message_steps if limit is None else limit
        try:
            while len(out) < limit:
                out.append(q.popleft())
        except IndexError:
            pass
        return out

    def _build_valid(self, items: list, exc: Exception) -> tuple[pb.EngineMessage | None, int]:
        """Build item by item, dropping (and counting) the ones the wire cannot carry."""
        good = []
        for it in items:
            try:
                build_message([it], self.config.client_request_id)
                good.append(it)
            except (TypeError, ValueError, OverflowError):
                self._dropped_malformed += 1
        log.warning("llmco2 emitter: dropped %d malformed events (%s)", len(items) - len(good), exc)
        return build_message(good, self.config.client_request_id) if good else (None, 0)
