"""Announcements and lookups of request records (the event loop's side of the ledger): records
announced to waiting lookups and ``WatchFinished`` watchers, ``GetRequestCarbon`` answers, running
figures. A mixin of :class:`~.core.SidecarCore` (its state lives there)."""

from __future__ import annotations

import asyncio
import time

from .._proto import sidecar_pb2 as spb
from .pipeline import Barrier
from .records import request_record

MAX_WAIT_S = 30.0
#: a lookup keeps every finish awaited this long after it (records on demand: _record_demand)
DEMAND_MEMORY_S = 10.0


class LookupsMixin:
    # ---- announcements (pipeline thread -> loop) -----------------------------------------------
    def _on_records(self, records: list[dict]) -> None:
        if self.otlp is not None:  # --otlp: one log record per finished request (on the pipeline thread)
            suppress = self.pipeline.suppress_ids  # journal replay: records already in the log were exported
            self.otlp.on_records([r for r in records if r["request_id"] not in suppress] if suppress else records)
        loop = self.loop
        if loop is not None and (self._waiters or self._watchers or self._prefix_waiters):
            try:
                loop.call_soon_threadsafe(self._announce, records)
            except RuntimeError:  # loop closed
                pass

    def _announce(self, records: list[dict]) -> None:
        # a record answers to its engine id and to its client's id (X-Request-Id)
        for prefix, fut in self._prefix_waiters:
            if not fut.done() and any(rec["request_id"].startswith(prefix)
                                      or (rec.get("client_request_id") or "").startswith(prefix) for rec in records):
                fut.set_result(None)
        for rec in records:
            client = rec.get("client_request_id") or ""
            for key in (rec["request_id"], client) if client else (rec["request_id"],):
                futs = self._waiters.pop(key, None)
                if futs:
                    for f in futs:
                        if not f.done():
                            f.set_result(rec)
            if self._watchers:
                msg = None
                for prefix, q in self._watchers:
                    if rec["request_id"].startswith(prefix) or (client and client.startswith(prefix)):
                        msg = msg or record_to_proto(rec)
                        try:
                            q.put_nowait(msg)
                        except asyncio.QueueFull:
                            self.metrics.watch_dropped.inc()

    # ---- demand (records on demand: Pipeline.expedite) ------------------------------------------
    def _record_demand(self) -> bool:
        """Does anyone wait for a record now: a waiting lookup, a WatchFinished watcher, or a lookup in
        the last DEMAND_MEMORY_S (read by the pipeline thread). The last: where responses are held for
        their carbon every request gets a lookup, usually just after its finish arrived; a finish then
        closes its micro-batch at once, so that the record is ready when the lookup comes (no round
        trip through expedite on every held response)."""
        return bool(self._record_waits or self._watchers) or time.monotonic() - self._last_wait_at < DEMAND_MEMORY_S

    def _wait_begins(self) -> None:
        self._record_waits += 1
        self._last_wait_at = time.monotonic()
        self.pipeline.expedite()

    # ---- lookups (loop thread) -----------------------------------------------------------------
    def running_record(self, rid: str) -> dict | None:
        with self.ledger.lock:
            t = self.ledger.totals(rid)
        if t is None:
            return None
        stream = self.streams.get(t.stream_id)
        acc = self.pipeline._accounting.get(t.stream_id)
        if stream is None or acc is None:
            return None
        rec = request_record(stream, acc, rid, t.last_wall_s, t.prompt_tokens, t.decode_slices, t.prefill_j,
                             t.decode_j, t.serving_j, t.gpu_s, t.steps, False, predictor=self.pipeline.predictor.name)
        rec["state"] = "running"
        return rec

    def _finished(self, rid: str) -> list[dict]:
        """The finished record of engine id ``rid``, else every finished record the client knows as ``rid``."""
        rec = self.ledger.get_finished(rid)
        if rec is not None:
            return [rec]
        with self.ledger.lock:
            return self.ledger.get_by_client(rid)

    async def lookup(self, rid: str, wait_s: float, prefix: bool) -> list[dict]:
        self._wait_begins()  # a record this lookup may wait for is written at once, not with the steps
        try:
            return await self._lookup(rid, min(max(wait_s, 0.0), MAX_WAIT_S), prefix)
        finally:
            self._record_waits -= 1

    async def _lookup(self, rid: str, wait_s: float, prefix: bool) -> list[dict]:
        if prefix:
            deadline = time.monotonic() + wait_s
            while True:
                # register first, then look: a record that lands in between still wakes us (the
                # pipeline thread only schedules an announcement while some waiter is registered)
                fut = self.loop.create_future()  # woken by a matching record (or re-checked every 50 ms)
                entry = (rid, fut)
                self._prefix_waiters.append(entry)
                try:
                    with self.ledger.lock:
                        done, running = self.ledger.find(rid)
                    left = deadline - time.monotonic()
                    if (done and not running) or left <= 0:
                        return done + [r for r in (self.running_record(x) for x in running) if r]
                    await asyncio.wait_for(fut, min(left, 0.05))
                except asyncio.TimeoutError:
                    pass
                finally:
                    self._prefix_waiters.remove(entry)
        found = self._finished(rid)
        if found:
            return found
        if wait_s > 0:
            fut = self.loop.create_future()
            self._waiters.setdefault(rid, []).append(fut)
            found = self._finished(rid)  # finished between the check and the registration
            if found:
                return found
            try:
                rec = await asyncio.wait_for(fut, wait_s)
                return self._finished(rid) or [rec]
            except asyncio.TimeoutError:
                pass
            finally:
                lst = self._waiters.get(rid)
                if lst and fut in lst:
                    lst.remove(fut)
                    if not lst:
                        self._waiters.pop(rid, None)
        found = self._finished(rid)
        if found:
            return found
        running = self.running_record(rid)
        if running is None and any(rid in s.live or rid in s.recently_done for s in self.streams.values()):
            # accepted (acknowledged) but the pipeline has not reached it yet: its steps may wait up to
            # step_wait_ms for company; a barrier closes that micro-batch now. Then wait for it, briefly
            if self.pipeline.pending > 0:
                self.pipeline.put_control(Barrier())
            deadline = time.monotonic() + 1.0
            while running is None and self.pipeline.pending > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
                rec = self.ledger.get_finished(rid)
                if rec is not None:
                    return [rec]
                running = self.running_record(rid)
        return [running] if running else []




def record_to_proto(rec: dict) -> spb.RequestCarbon:
    state = rec.get("state")
    if state == "running":
        st = spb.RequestCarbon.STATE_RUNNING
    else:
        st = spb.RequestCarbon.STATE_ABORTED if rec.get("aborted") else spb.RequestCarbon.STATE_FINISHED
    e, c = rec["energy_j"], rec["carbon_g"]
    return spb.RequestCarbon(
        request_id=rec["request_id"], state=st, ts=rec["ts"], model=rec["model"], gpu=rec["gpu"],
        prompt_tokens=rec["prompt_tokens"], output_tokens=rec["output_tokens"],
        energy_j=spb.EnergyBreakdown(prefill=e["prefill"], decode=e["decode"], serving=e["serving"], total=e["total"]),
        carbon_g=spb.CarbonBreakdown(operational=c["operational"], embodied=c["embodied"], total=c["total"]),
        source=rec["source"], pue=rec["pue"], carbon_intensity_g_per_kwh=rec["carbon_intensity_g_per_kwh"],
        engine=rec.get("engine", ""), steps=rec.get("steps", 0),
        client_request_id=rec.get("client_request_id") or "",
        carbon_intensity_kind=rec.get("carbon_intensity_kind") or "",
        carbon_intensity_source=rec.get("carbon_intensity_source") or "",
        carbon_intensity_ts=rec.get("carbon_intensity_ts") or 0.0,
        sci_g_per_1k_output_tokens=(rec.get("sci") or {}).get("g_per_1k_output_tokens") or 0.0,
        error=rec.get("error") or "",
        expected_error_pct=rec.get("expected_error_pct") or 0.0,
    )


