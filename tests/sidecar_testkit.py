"""Helpers for the sidecar, emitter and pipeline tests: identities, step messages, configs for a real loopback sidecar."""

from __future__ import annotations

import queue
import time

import grpc

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar.config import SidecarConfig

MODEL = "meta-llama/Llama-2-7b-hf"
GPU = "A100-SXM4-80GB"


def identity(instance_id: str = "engine-1", **kw) -> pb.EngineMessage:
    fields = dict(engine_name="test", instance_id=instance_id, model_name=MODEL, gpu=GPU, tp=1,
                  engine_clock_at_open_s=0.0, wall_clock_at_open_s=1_700_000_000.0)
    fields.update(kw)
    return pb.EngineMessage(identity=pb.EngineIdentity(**fields))


def steps_message(seq: int, steps: list[tuple], done: list[tuple] = ()) -> pb.EngineMessage:
    """steps: (step_id, start, end, [(rid, new, ctx, prompt), ...]); done: (rid, output_tokens)."""
    msg = pb.EngineMessage()
    ev = msg.events
    ev.seq = seq
    for sid, t0, t1, slices in steps:
        add_step(ev, sid, t0, t1, slices)
    for rid, out in done:
        ev.done.add(request_id=rid, output_tokens=out)
    return msg


def add_step(ev, sid, t0, t1, slices, phase=None) -> None:
    """Append one step, ``slices`` = [(rid, new, ctx, prompt), ...], to an EventBatch's columns."""
    ev.steps.step_id.append(sid)
    ev.steps.start_s.append(t0)
    ev.steps.end_s.append(t1)
    ev.steps.slice_count.append(len(slices))
    for rid, new, ctx, prompt in slices:
        ev.steps.request_id.append(rid)
        ev.steps.new_tokens.append(new)
        ev.steps.context_tokens.append(ctx)
        ev.steps.prompt_tokens.append(prompt)
    if phase is not None:
        ev.steps.phase.extend([phase] * len(slices))


def make_config(tmp_path, **kw) -> SidecarConfig:
    kw.setdefault("port", 0)
    kw.setdefault("log", str(tmp_path / "carbon.jsonl"))
    kw.setdefault("predictor", "roofline")
    return SidecarConfig(**kw)


class Stream:
    """A bidirectional StreamEvents call driven message by message."""

    def __init__(self, stub, metadata=None):
        self._q: queue.Queue = queue.Queue()
        self.call = stub.StreamEvents(iter(self._q.get, None), metadata=metadata)

    def send(self, msg):
        self._q.put(msg)
        return next(self.call)

    def close(self):
        self._q.put(None)
        return list(self.call)


def rpc_error(fn) -> tuple:
    """(status code, details) of the grpc.RpcError that ``fn()`` raises; AssertionError if none."""
    try:
        fn()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    raise AssertionError("no grpc.RpcError raised")


def until(pred, timeout_s: float = 10.0) -> bool:
    """Poll ``pred()`` every 10 ms until it is true or ``timeout_s`` passes; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()
