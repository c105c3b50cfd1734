"""Sarathi-Serve's scheduler outputs to the llmco2 sidecar.

Sarathi-Serve's engine step (``BaseLLMEngine.step``) runs ``scheduler.schedule()``, then
``seq_manager.on_schedule(outputs)``, executes the batch and calls
``_on_step_completed(outputs, ...)``. Its ``SchedulerOutputs`` lists, per scheduled sequence, a
``SequenceScheduleMetadata`` with ``seq_id`` and ``prompt_chunk_len`` (``num_tokens =
max(prompt_chunk_len, 1)``: a prefill chunk, or one decode token), plus ``preempted_seq_ids``. The
tokens already in the KV cache come from the engine's ``Sequence`` objects
(``seq_manager.seq_map``): ``get_num_prompt_tokens_processed()`` for a prefill chunk,
``get_len() - 1`` for a decode.

:class:`SarathiCarbonHook` turns that into :class:`llmco2_sidecar.sim.ScheduledSeq` slices for
the sidecar's :class:`~llmco2_sidecar.sim.SarathiAdapter` (which feeds the non-blocking emitter):
call :meth:`~SarathiCarbonHook.on_schedule` right after ``seq_manager.on_schedule()`` (the step's
start; preemptions are applied by then) and
:meth:`~SarathiCarbonHook.on_step_completed` after the sequences were updated (its end; finished
sequences are reported then). :func:`attach` wires both into a Sarathi engine instance.

A preempted sequence is recomputed by Sarathi as a prefill of its prompt plus what it had generated
(``Sequence.reset_for_recompute``): the hook keeps each sequence's original prompt length, marks the
re-prefill as ``recompute`` and counts output tokens against the original prompt.
Like the vLLM hook, it never raises into the engine: failures are counted and logged once.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Mapping

from llmco2_sidecar.sim import SarathiAdapter, ScheduledSeq

log = logging.getLogger("llmco2.sarathi")


class SarathiCarbonHook:
    """Sarathi-Serve ``SchedulerOutputs`` -> :class:`SarathiAdapter` (see the module docstring).

    Args:
        adapter: the sidecar's adapter (wrapping a started ``Emitter``).
        sequences: ``seq_id -> Sequence`` (Sarathi's ``seq_manager.seq_map``), read at each call.
        clock: the engine clock of the step times (the emitter's clock).
    """

    def __init__(self, adapter: SarathiAdapter, sequences: Mapping[str, Any], clock: Callable[[], float] = time.monotonic):
        self.adapter = adapter
        self.sequences = sequences
        self.clock = clock
        self._prompt: dict[str, int] = {}  # original prompt length per live sequence
        self._recompute: set[str] = set()
        self._pending: dict[int, tuple[float, list[ScheduledSeq], list[Any]]] = {}
        self.errors = 0

    def on_schedule(self, outputs: Any) -> None:
        """Right after ``seq_manager.on_schedule()``: note the start and the step's composition."""
        try:
            t0 = self.clock()
            seqs = self.sequences
            for sid in getattr(outputs, "preempted_seq_ids", None) or ():
                if sid in self._prompt:
                    self._recompute.add(sid)
            batch, objs = [], []
            for meta in outputs.scheduled_seq_metadata_list:
                sid = meta.seq_id
                seq = seqs[sid]
                prompt = self._prompt.get(sid)
                if prompt is None:
                    prompt = self._prompt[sid] = int(seq.get_prompt_len())
                chunk = int(meta.prompt_chunk_len)
                if chunk > 0:
                    processed = int(seq.get_num_prompt_tokens_processed())
                    recompute = sid in self._recompute
                else:
                    processed = int(seq.get_len()) - 1
                    recompute = False
                batch.append(ScheduledSeq(sid, prompt, processed, max(chunk, 1), recompute))
                objs.append(seq)
            if batch:
                self._pending[id(outputs)] = (t0, batch, objs)
        except Exception as exc:
            self._failed("on_schedule", exc)

    def on_step_completed(self, outputs: Any) -> None:
        """After the engine updated its sequences: send the step, then the sequences that finished."""
        try:
            entry = self._pending.pop(id(outputs), None)
            if entry is None:
                return
            t1 = self.clock()
            t0, batch, objs = entry
            self.adapter.on_step(t0, max(t0, t1), batch)
            # the Sequence objects as scheduled: Sarathi drops finished ones from seq_map
            for s, seq in zip(batch, objs):
                if s.recompute and _prefill_done(seq):
                    self._recompute.discard(s.seq_id)
                if seq.is_finished():
                    self._finish(s.seq_id, seq, t1, aborted=False)
        except Exception as exc:
            self._failed("on_step_completed", exc)

    def on_aborted(self, seq_id: str) -> None:
        """The engine dropped ``seq_id`` (client gone, error): report it if the sidecar saw it."""
        try:
            seq = self.sequences.get(seq_id)
            self._finish(seq_id, seq, self.clock(), aborted=True)
        except Exception as exc:
            self._failed("on_aborted", exc)

    def _finish(self, seq_id: str, seq: Any, t: float, aborted: bool) -> None:
        prompt = self._prompt.pop(seq_id, None)
        self._recompute.discard(seq_id)
        if prompt is None:  # never scheduled: the sidecar never saw it
            return
        output = max(0, int(seq.get_len()) - prompt) if seq is not None else 0
        if aborted:
            self.adapter.on_aborted(seq_id, output_tokens=output, time_s=t)
        else:
            self.adapter.on_finished(seq_id, output_tokens=output, time_s=t, prompt_len=prompt)

    def _failed(self, where: str, exc: BaseException) -> None:
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.warning("llmco2: Sarathi hook error in %s (%d so far; the engine is not affected): %r",
                        where, self.errors, exc, exc_info=exc if self.errors == 1 else None)


def _prefill_done(seq: Any) -> bool:
    return int(seq.get_num_prompt_tokens_processed()) >= int(seq.get_prompt_len())


def attach(engine: Any, adapter: SarathiAdapter, clock: Callable[[], float] = time.monotonic) -> SarathiCarbonHook:
    """Wire a hook into a Sarathi-Serve engine instance (``seq_manager.on_schedule`` and
    ``_on_step_completed`` are wrapped on the instance; the engine's code is unchanged)."""
    hook = SarathiCarbonHook(adapter, engine.seq_manager.seq_map, clock)
    seq_manager = engine.seq_manager
    orig_on_schedule = seq_manager.on_schedule
    orig_completed = engine._on_step_completed

    def on_schedule(scheduler_outputs, *args, **kwargs):
        result = orig_on_schedule(scheduler_outputs, *args, **kwargs)
        hook.on_schedule(scheduler_outputs)
        return result

    def _on_step_completed(scheduler_outputs, *args, **kwargs):
        result = orig_completed(scheduler_outputs, *args, **kwargs)
        hook.on_step_completed(scheduler_outputs)
        return result

    seq_manager.on_schedule = on_schedule
    engine._on_step_completed = _on_step_completed
    return hook
