"""The journal's side of the sidecar's life: replay at start, checkpoints at each roll.

Mixed into :class:`.core.SidecarCore` (it uses the core's journal, pipeline, ledger, streams, carbon
log, dead letter and disk worker). At start the journal is replayed through ingest and the pipeline
from the last checkpoint on (records already in the carbon log are not written twice; a journal whose
replay kept killing the process is set aside). At each segment roll the state is checkpointed: the
pipeline takes the state after everything before the roll, and the disk worker fsyncs the carbon log
and writes the checkpoint (which deletes the older segments) without holding up the pipeline.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import shutil
import time

from .._proto import events_pb2 as pb
from ..errors import InputError
from . import ingest as ing
from .carbon_log import dumps
from .dead_letter import describe
from .journal import KIND_EVENTS, KIND_IDENTITY, STREAMS_JSON
from .pipeline import Barrier
from .records import error_record

log = logging.getLogger("llmco2.server")
MAX_REPLAY_ATTEMPTS = 2  # a journal whose replay did not finish this often is set aside (quarantine-*)
REPLAY_ATTEMPTS = "replay-attempts"


class RecoveryMixin:
    def _recover(self) -> bool:
        ckpt = self.journal.read_checkpoint()
        segs = self.journal.segments()
        if not segs and ckpt is None:
            return False
        start_seg = int(ckpt["segment"]) if ckpt is not None else 0
        if not self._count_replay_attempt(start_seg):
            return False
        if ckpt is not None:
            self._restore_checkpoint(ckpt)
        self.pipeline.suppress_ids = self.carbon_log.logged_request_ids()
        self.pipeline.replaying = True
        n = 0
        refused: dict[str, tuple[str, pb.EngineIdentity | None]] = {}
        errors: list[dict] = []
        for kind, key, payload in self.journal.replay(start_seg):
            if kind == KIND_IDENTITY:
                ident = None
                try:
                    ident = pb.EngineIdentity.FromString(payload)
                    ing.open_stream(ident, self.streams, self.config.hardware, self.check_deployment)
                    refused.pop(key, None)
                except Exception as exc:  # the catalog changed, or an identity an older version took
                    why = str(exc) if isinstance(exc, InputError) else describe(exc)
                    refused[key] = (f"identity refused: {why}", ident)
                    self.streams.pop(key, None)
                continue
            if kind != KIND_EVENTS:
                continue
            why = None
            if key not in self.streams:
                why = refused.get(key, ("no valid identity of this engine in the journal",))[0]
            else:
                try:
                    res = ing.ingest(self.streams[key], pb.EventBatch.FromString(payload))
                except Exception as exc:
                    why = describe(exc)
            if why is not None:  # a frame that cannot be replayed: kept, counted, never replayed again
                self.dead_letter.frame("replay", key, why, payload)
                errors.extend(_frame_error_records(key, refused.get(key, ("", None))[1], payload, why))
                continue
            if res.steps is not None or res.done or res.batches:
                self.pipeline.submit(res)
                n += 1
        self.replayed_messages = n
        logged = self.pipeline.suppress_ids
        lines = [dumps(r) for r in errors if r["request_id"] not in logged]
        if lines:  # the acknowledged finishes of frames that cannot be replayed still get a record
            self.carbon_log.write_lines(lines)

        def done() -> None:
            self.pipeline.replaying = False
            self.pipeline.suppress_ids = set()

        self.pipeline.barrier(done, timeout_s=600)
        if self.journal.truncated_bytes:
            log.warning("journal: removed %d bytes of a torn frame", self.journal.truncated_bytes)
        log.info("journal replay: %d messages", n)
        return True

    def _count_replay_attempt(self, start_seg: int) -> bool:
        """Poison that kills the process (not an exception: memory, a crash in native code) must not be
        replayed forever: a journal whose replay did not finish MAX_REPLAY_ATTEMPTS times is moved to
        ``quarantine-<time>/`` beside it (a dead-letter entry says where) and the sidecar starts clean."""
        path = self.journal.dir / REPLAY_ATTEMPTS
        try:
            attempts = int(path.read_text() or 0) if path.exists() else 0
        except (OSError, ValueError):
            attempts = 0
        if attempts >= MAX_REPLAY_ATTEMPTS:
            dest = self.journal.dir / f"quarantine-{int(time.time())}"
            dest.mkdir(parents=True, exist_ok=True)
            for n in self.journal.segments():
                if n >= start_seg:
                    shutil.move(str(self.journal.path(n)), str(dest / self.journal.path(n).name))
            self.dead_letter.put("replay", "", f"the journal replay did not finish {attempts} times: its segments "
                                 f"were moved to {dest} and not replayed", events={"quarantine": str(dest)})
            path.unlink(missing_ok=True)
            return False
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(attempts + 1))
        except OSError as exc:  # a full disk: replay without the guard (and say so)
            log.warning("journal: cannot count the replay attempt (%s)", exc)
        return True

    def _restore_checkpoint(self, ckpt: dict) -> None:
        for s in ckpt.get("streams", []):
            ident = pb.EngineIdentity.FromString(base64.b64decode(s["identity"]))
            try:
                st = ing.open_stream(ident, self.streams, self.config.hardware, self.check_deployment)
            except InputError as exc:
                log.warning("checkpoint: stream %s no longer valid (%s)", s["stream_id"], exc)
                continue
            st.last_step_id = s["last_step_id"]
            st.last_end_s = s["last_end_s"] if s["last_end_s"] is not None else -math.inf
            st.last_batch_id = s["last_batch_id"]
            st.live = set(s["live"])
            for r in s["recently_done"]:
                st.recently_done[r] = None
        self.ledger.restore_running(ckpt.get("running", []))
        self.pipeline._last_end.update(ckpt.get("last_end", {}))

    def _stream_entry(self, s) -> str:
        """A stream's checkpoint entry as JSON text, on the event loop at the roll. An entry is kept per
        stream object and reused while no message changed the stream (``StreamState.version``): the
        streams of engines that went away cost nothing at each roll (each entry holds up to 10,000
        finished ids; serialising every stream's at every roll held the loop and the GIL for tens of ms)."""
        cache = self._checkpoint_entries
        hit = cache.get(s.stream_id)
        if hit is not None and hit[0] is s and hit[1] == s.version:
            return hit[2]
        text = json.dumps({"stream_id": s.stream_id, "identity": base64.b64encode(s.identity.SerializeToString()).decode(),
                           "last_step_id": s.last_step_id,
                           "last_end_s": s.last_end_s if math.isfinite(s.last_end_s) else None,
                           "last_batch_id": s.last_batch_id, "live": sorted(s.live),
                           "recently_done": list(s.recently_done)[-10000:]})
        cache[s.stream_id] = (s, s.version, text)
        return text

    def _checkpoint(self) -> None:
        """Roll the journal and checkpoint the state at the start of the new segment."""
        try:
            seg = self.journal.roll()
        except OSError:
            self._note_disk()
            return
        streams = [self._stream_entry(s) for s in self.streams.values()]

        def persist(state: dict) -> None:  # on the disk worker (after the rotated log files' fsyncs)
            try:
                if self.config.fsync != "never":  # the records of the segments about to go are on disk first
                    self.carbon_log.fsync()
                self.journal.write_checkpoint(state)
            except OSError as exc:  # the older segments stay; the next roll tries again
                self.metrics.disk_errors.labels("journal").inc()
                log.warning("journal checkpoint not written (%s); older segments kept", exc)

        def snapshot() -> None:  # on the pipeline thread, after everything before the roll
            if self.carbon_log.backlog:  # records of older segments are not in the log yet: keep them
                log.warning("journal checkpoint postponed: %d records wait for the carbon log",
                            len(self.carbon_log.backlog))
                return
            # every record of the older segments has been written (not yet fsynced): the state now is
            # the checkpoint's; the fsync and the file wait for the disk on the worker
            state = {"segment": seg, "written_at": time.time(), STREAMS_JSON: streams,
                     "running": self.ledger.snapshot_running(), "last_end": dict(self.pipeline._last_end)}
            self.disk.submit(persist, state)

        self.pipeline.put_control(Barrier(snapshot))


def _frame_error_records(key: str, ident, payload: bytes, why: str) -> list[dict]:
    """Error records for the finishes in a journal frame that cannot be replayed."""
    from types import SimpleNamespace

    try:
        batch = pb.EventBatch.FromString(payload)
    except Exception:
        return []
    stream = SimpleNamespace(stream_id=key, model_label=ident.model_name if ident is not None else "",
                             gpu_label=ident.gpu if ident is not None else "")
    offset = (ident.wall_clock_at_open_s - ident.engine_clock_at_open_s) if ident is not None and \
        ident.wall_clock_at_open_s else 0.0
    out = [error_record(stream, None, d.request_id, (d.time_s + offset) if d.time_s else time.time(), f"replay: {why}",
                        d.prompt_tokens, d.output_tokens, d.aborted) for d in batch.done if d.request_id]
    for b in batch.static_batches:
        out += [error_record(stream, None, r, b.end_s + offset, f"replay: {why}", p, o)
                for r, p, o in zip(b.request_id, b.prompt_tokens, b.output_tokens) if r]
    return out
