"""Shared by the isolation tests: engines driven over real gRPC, poisoning predictors, record checks."""

from __future__ import annotations


import numpy as np
from sidecar_testkit import Stream, identity, steps_message

from llmco2_sidecar.predictor.roofline import RooflinePredictor


class Engine:
    """One engine: each message starts ``per_message`` requests (a prefill step, a decode step) and
    finishes them. ``prompt`` picks each request's prompt length (a poison marker, for example)."""

    def __init__(self, stub, name: str, per_message: int = 3, **identity_kw):
        self.name = name
        self.stream = Stream(stub)
        self.first_ack = self.stream.send(identity(name, **identity_kw))
        self.per_message = per_message
        self.step = 0
        self.t = 0.0
        self.seq = 0
        self.acked_done: list[str] = []
        self.acks = []

    def message(self, prompt=lambda k: 64 + k, extra_done=()):
        steps, done = [], []
        self.seq += 1
        for k in range(self.per_message):
            rid = f"{self.name}-m{self.seq}-r{k}"
            p = prompt(k)
            self.step += 1
            steps.append((self.step, self.t, self.t + 0.02, [(rid, p, 0, p)]))
            self.t += 0.03
            self.step += 1
            steps.append((self.step, self.t, self.t + 0.01, [(rid, 1, p, p)]))
            self.t += 0.02
            done.append((rid, 2))
        return steps_message(self.seq, steps, list(done) + list(extra_done))

    def send(self, msg):
        ack = self.stream.send(msg)
        self.acks.append(ack)
        for d in msg.events.done:
            if not any(r.kind == r.KIND_DONE and r.request_id == d.request_id for r in ack.rejections):
                self.acked_done.append(d.request_id)
        return ack

    def close(self):
        return self.stream.close()


POISON_PROMPT = 777  # the predictor raises (mode "raise") or returns NaN ("nan") on it
NAN_PROMPT = 778  # the predictor always returns NaN energy on it


class PoisonPredictor(RooflinePredictor):
    """The Roofline predictor, except that it raises on any step holding a slice of POISON_PROMPT new
    tokens (``mode="raise"``) or returns NaN energy for it (``mode="nan"``): the predictor bugs an
    operator meets (an exception, a non-finite output), on demand."""

    def __init__(self, mode: str = "raise"):
        super().__init__()
        self.mode = mode
        self.calls = 0

    def predict_steps(self, deployment, steps):
        self.calls += 1
        poisoned = np.isin(steps.request_step, steps.request_step[steps.new_tokens == POISON_PROMPT])
        if poisoned.any() and self.mode == "raise":
            raise RuntimeError("injected predictor failure")
        poisoned |= np.isin(steps.request_step, steps.request_step[steps.new_tokens == NAN_PROMPT])
        pred = super().predict_steps(deployment, steps)
        if poisoned.any():
            e = np.asarray(pred.energy_j, dtype=np.float64).copy()
            e[np.unique(steps.request_step[poisoned])] = np.nan
            pred.energy_j = e
        return pred
