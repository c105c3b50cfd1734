"""The adapter a Sarathi-style engine calls with its scheduler outputs; it feeds the emitter.

A real Sarathi-Serve ``SchedulerOutputs`` maps onto :class:`ScheduledSeq` one sequence at a time::

    ScheduledSeq(seq_id=seq.seq_id, prompt_len=seq.get_prompt_len(),
                 processed_tokens=seq.get_num_prompt_tokens_processed() if prefill else seq.get_len() - 1,
                 chunk_len=metadata.num_prompt_tokens or 1)

``processed_tokens`` is what the KV cache holds before the step (the context); ``chunk_len`` the
tokens computed in the step (a prefill chunk > 1, a decode 1). Call :meth:`SarathiAdapter.on_step`
after the step ran (with its start and end on the engine's clock), :meth:`on_finished` /
:meth:`on_aborted` when a sequence leaves. Nothing here blocks: it only enqueues on the emitter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..client.emitter import Emitter, Phase


@dataclass(frozen=True)
class ScheduledSeq:
    """One sequence's part of one engine step.

    Attributes:
        seq_id: the request id (unique per engine).
        prompt_len: prompt tokens of the request.
        processed_tokens: tokens already in the KV cache before this step.
        chunk_len: tokens computed in this step (prefill chunk > 1, decode 1).
        recompute: True while re-prefilling after a preemption (the KV was dropped).
    """

    seq_id: str
    prompt_len: int
    processed_tokens: int
    chunk_len: int
    recompute: bool = False


class SarathiAdapter:
    def __init__(self, emitter: Emitter):
        self.emitter = emitter
        self._step_id = 0

    def on_step(self, start_s: float, end_s: float, seqs: Sequence[ScheduledSeq], step_id: int | None = None) -> bool:
        """Send one executed step. Returns False if the emitter had to drop it."""
        if not seqs:
            return True
        self._step_id = self._step_id + 1 if step_id is None else int(step_id)
        rids, prompt, ctx, new, phases = [], [], [], [], []
        for s in seqs:
            rids.append(s.seq_id)
            prompt.append(s.prompt_len)
            ctx.append(s.processed_tokens)
            new.append(s.chunk_len)
            if s.processed_tokens == 0:
                phases.append(Phase.PREFILL_NEW)
            elif s.recompute or s.processed_tokens < s.prompt_len or s.chunk_len > 1:
                phases.append(Phase.PREFILL_CHUNK)
            else:
                phases.append(Phase.DECODE)
        return self.emitter.emit_step(self._step_id, start_s, end_s, rids, new, ctx, prompt, phases)

    def on_finished(self, seq_id: str, output_tokens: int, time_s: float = 0.0, prompt_len: int = 0) -> bool:
        return self.emitter.emit_done(seq_id, output_tokens=output_tokens, time_s=time_s, prompt_tokens=prompt_len)

    def on_aborted(self, seq_id: str, output_tokens: int = 0, time_s: float = 0.0) -> bool:
        return self.emitter.emit_done(seq_id, output_tokens=output_tokens, aborted=True, time_s=time_s)
