"""CarbonMiddleware (pure ASGI) over small ASGI apps shaped like vLLM's OpenAI routes, against a real
sidecar on loopback that received the engine requests' steps through a real emitter."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo
from llmco2_sidecar.config import SidecarConfig
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread
from llmco2_vllm.lookup import CarbonLookup
from llmco2_vllm.middleware import CarbonMiddleware
from llmco2_vllm.settings import Settings


@pytest.fixture
def sidecar(tmp_path):
    sc = SidecarThread(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="roofline")).start()
    yield sc
    sc.stop()


@pytest.fixture
def emitter(sidecar):
    em = Emitter(EngineInfo(engine_name="vllm", model_name="meta-llama/Llama-2-7b-hf", gpu="A100"),
                 EmitterConfig(target=sidecar.address))
    yield em
    em.close()


class Engine:
    """Sends one engine request's steps (a 40-token prompt in two chunks, then decodes) and its end."""

    def __init__(self, emitter):
        self.em = emitter
        self.step = 0
        self.t = time.monotonic()

    def run(self, rid: str, output_tokens: int = 3, finish: bool = True) -> None:
        plan = [(0, 32), (32, 8)] + [(40 + k, 1) for k in range(output_tokens - 1)]
        for ctx, new in plan:
            self.step += 1
            self.em.emit_step(self.step, self.t, self.t + 0.01, [rid], [new], [ctx], [40])
            self.t += 0.01
        if finish:
            self.em.emit_done(rid, output_tokens=output_tokens)


def json_app(body: dict, seen: dict, status: int = 200):
    async def app(scope, receive, send):
        seen["headers"] = dict(scope["headers"])
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})
    return app


def sse_app(chunks: list[bytes], seen: dict):
    async def app(scope, receive, send):
        seen["headers"] = dict(scope["headers"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        for c in chunks:
            await send({"type": "http.response.body", "body": c, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    return app


def call(mw, path: str, headers: list | None = None, method: str = "POST") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": headers or []}

    async def main():
        await mw(scope, receive, send)
        await mw.lookup.close()

    asyncio.run(main())
    return sent


def hdrs(sent: list[dict]) -> dict:
    return {k.decode(): v.decode() for k, v in sent[0]["headers"]}


def body(sent: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent[1:])


def record(tmp_path, rid: str) -> dict:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        recs = [r for r in read_records(tmp_path / "carbon.jsonl") if r["request_id"] == rid]
        if recs:
            return recs[0]
        time.sleep(0.02)
    raise AssertionError(f"no record for {rid}")


def mw_for(app, sidecar, wait_s: float = 3.0):
    settings = Settings(target=sidecar.address, response_wait_s=wait_s)
    return CarbonMiddleware(app, settings=settings, lookup=CarbonLookup(settings.target))


def test_non_streaming_response_gets_carbon_headers(sidecar, emitter, tmp_path):
    Engine(emitter).run("cmpl-clientA-0-1a2b3c4d")
    seen: dict = {}
    sent = call(mw_for(json_app({"id": "cmpl-clientA"}, seen), sidecar), "/v1/completions",
                [(b"x-request-id", b"clientA")])
    h = hdrs(sent)
    rec = record(tmp_path, "cmpl-clientA-0-1a2b3c4d")
    assert h["x-request-id"] == "clientA" and h["x-llmco2-carbon-status"] == "final"
    assert float(h["x-llmco2-carbon-g"]) == pytest.approx(rec["carbon_g"]["total"], rel=1e-5)
    assert float(h["x-llmco2-energy-j"]) == pytest.approx(rec["energy_j"]["total"], rel=1e-5)
    assert "x-llmco2-expected-error-pct" not in h and rec["expected_error_pct"] is None  # Roofline: no held-out scores
    assert json.loads(body(sent)) == {"id": "cmpl-clientA"}


def test_every_engine_request_of_a_multi_prompt_completion_is_summed(sidecar, emitter, tmp_path):
    eng = Engine(emitter)
    eng.run("cmpl-multi-0-aaaaaaaa")
    eng.run("cmpl-multi-1-bbbbbbbb")
    eng.run("cmpl-multiple-0-cccccccc")  # another request whose id merely starts alike
    sent = call(mw_for(json_app({}, {}), sidecar), "/v1/completions", [(b"X-Request-Id", b"multi")])
    total = sum(record(tmp_path, r)["carbon_g"]["total"] for r in ("cmpl-multi-0-aaaaaaaa", "cmpl-multi-1-bbbbbbbb"))
    assert float(hdrs(sent)["x-llmco2-carbon-g"]) == pytest.approx(total, rel=1e-5)


def test_streaming_response_gets_a_final_carbon_event_before_done(sidecar, emitter, tmp_path):
    Engine(emitter).run("chatcmpl-s1-0badc0de")
    chunks = [b'data: {"id": "chatcmpl-s1", "choices": []}\n\n', b'data: {"id": "chatcmpl-s1"}\n\n',
              b"data: [DONE]\n\n"]
    sent = call(mw_for(sse_app(chunks, {}), sidecar), "/v1/chat/completions", [(b"x-request-id", b"s1")])
    events = [e[len("data: "):] for e in body(sent).decode().split("\n\n") if e]
    assert events[-1] == "[DONE]"
    carbon = json.loads(events[-2])
    rec = record(tmp_path, "chatcmpl-s1-0badc0de")
    assert carbon["object"] == "llmco2.carbon" and carbon["request_id"] == "s1" and carbon["status"] == "final"
    assert carbon["carbon_g"] == pytest.approx(rec["carbon_g"]["total"], rel=1e-9)
    assert carbon["energy_j"] == pytest.approx(rec["energy_j"]["total"], rel=1e-9)
    assert 0 <= carbon["wait_ms"] < 3000  # the request had finished: a short wait, well within the bound
    assert [json.loads(e) for e in events[:2]] == [{"id": "chatcmpl-s1", "choices": []}, {"id": "chatcmpl-s1"}]


def test_done_in_the_same_chunk_as_the_last_tokens(sidecar, emitter):
    Engine(emitter).run("cmpl-s2-0-0badc0de")
    sent = call(mw_for(sse_app([b'data: {"x": 1}\n\ndata: [DONE]\n\n'], {}), sidecar), "/v1/completions",
                [(b"x-request-id", b"s2")])
    events = [e for e in body(sent).decode().split("\n\n") if e]
    assert events[0] == 'data: {"x": 1}' and events[-1] == "data: [DONE]"
    assert json.loads(events[1][len("data: "):])["status"] == "final"


def test_response_waits_for_a_request_that_finishes_late(sidecar, emitter):
    eng = Engine(emitter)
    eng.run("cmpl-late-0-12345678", finish=False)
    timer = threading.Timer(0.4, lambda: emitter.emit_done("cmpl-late-0-12345678", output_tokens=3))
    timer.start()
    t0 = time.monotonic()
    sent = call(mw_for(json_app({}, {}), sidecar, wait_s=5.0), "/v1/completions", [(b"x-request-id", b"late")])
    timer.join()
    assert hdrs(sent)["x-llmco2-carbon-status"] == "final"
    elapsed_ms = (time.monotonic() - t0) * 1e3
    assert 300 < elapsed_ms < 5000
    # the header says how long the response was held for its carbon: most of the call
    assert 300 < float(hdrs(sent)["x-llmco2-wait-ms"]) <= elapsed_ms


def test_request_id_is_added_and_unknown_requests_say_pending(sidecar):
    seen: dict = {}
    t0 = time.monotonic()
    sent = call(mw_for(json_app({}, seen), sidecar, wait_s=0.3), "/v1/chat/completions")
    rid = seen["headers"][b"x-request-id"].decode()
    h = hdrs(sent)
    assert len(rid) == 32 and h["x-request-id"] == rid
    assert h["x-llmco2-carbon-status"] == "pending" and "x-llmco2-carbon-g" not in h
    assert time.monotonic() - t0 < 3.0
    assert 250 <= float(h["x-llmco2-wait-ms"]) < 3000  # held for the whole bounded wait (0.3 s), then pending


def test_other_routes_and_errors_pass_through(sidecar):
    seen: dict = {}
    sent = call(mw_for(json_app({"ok": True}, seen), sidecar), "/health", method="GET")
    assert b"x-request-id" not in seen["headers"] and "x-llmco2-carbon-status" not in hdrs(sent)
    sent = call(mw_for(json_app({"error": "bad"}, {}, status=400), sidecar), "/v1/completions")
    assert sent[0]["status"] == 400 and "x-llmco2-carbon-status" not in hdrs(sent)
    assert json.loads(body(sent)) == {"error": "bad"}


def test_sidecar_down_leaves_responses_intact():
    settings = Settings(target="127.0.0.1:1", response_wait_s=0.2)
    mw = CarbonMiddleware(json_app({"a": 1}, {}), settings=settings, lookup=CarbonLookup(settings.target))
    sent = call(mw, "/v1/completions", [(b"x-request-id", b"down")])
    assert sent[0]["status"] == 200 and hdrs(sent)["x-llmco2-carbon-status"] == "pending"
    assert json.loads(body(sent)) == {"a": 1}
    sse = CarbonMiddleware(sse_app([b"data: {}\n\n", b"data: [DONE]\n\n"], {}), settings=settings,
                           lookup=CarbonLookup(settings.target))
    events = [e for e in body(call(sse, "/v1/completions")).decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and json.loads(events[-2][6:])["status"] == "pending"


def test_lookups_find_a_restarted_sidecar_within_about_a_second(tmp_path):
    """A long outage must not leave the lookup channel in gRPC's growing reconnect backoff (1 s up to
    120 s by default): once the sidecar is back, responses carry carbon again within about a second."""
    sock = tmp_path / "sidecar.sock"

    def start():
        return SidecarThread(SidecarConfig(unix=str(sock), log=str(tmp_path / "carbon.jsonl"),
                                           predictor="roofline")).start()

    def engine_run(sc, rid):
        em = Emitter(EngineInfo(engine_name="vllm", model_name="meta-llama/Llama-2-7b-hf", gpu="A100"),
                     EmitterConfig(target=sc.address))
        Engine(em).run(rid)
        assert em.flush(10.0)
        em.close()

    sc = start()
    lookup = CarbonLookup(sc.address)

    async def main():
        engine_run(sc, "cmpl-before-0-00000000")
        assert (await lookup.request_carbon("before", "cmpl-before-", 2.0)).finished
        sc.stop()
        t_down = time.monotonic()
        while time.monotonic() - t_down < 6.0:  # a long outage: lookups fail at once, again and again
            t = time.monotonic()
            assert await lookup.request_carbon("before", "cmpl-before-", 2.0) is None
            assert time.monotonic() - t < 1.0
            await asyncio.sleep(0.1)
        sc2 = start()
        try:
            engine_run(sc2, "cmpl-after-0-00000000")
            t_up = time.monotonic()
            fig = None
            while fig is None and time.monotonic() - t_up < 10.0:
                fig = await lookup.request_carbon("after", "cmpl-after-", 0.5)
                if fig is None:
                    await asyncio.sleep(0.05)
            assert fig is not None and fig.finished
            assert time.monotonic() - t_up < 1.6, f"carbon again {time.monotonic() - t_up:.1f} s after the restart"
        finally:
            await lookup.close()
            sc2.stop()

    asyncio.run(main())


def test_a_zero_wait_never_holds_a_response_nor_asks_the_sidecar(sidecar, emitter, tmp_path):
    """LLMCO2_RESPONSE_WAIT_S=0: responses go out as vLLM made them (plus pending), the sidecar is not
    asked (its lookups would cost a round trip), and the record still lands in the carbon log."""

    class CountingLookup(CarbonLookup):
        calls = 0

        async def request_carbon(self, *a, **k):
            CountingLookup.calls += 1
            return await super().request_carbon(*a, **k)

    Engine(emitter).run("cmpl-nowait-0-0badc0de")
    settings = Settings(target=sidecar.address, response_wait_s=0.0)
    mw = CarbonMiddleware(json_app({"id": "x"}, {}), settings=settings, lookup=CountingLookup(settings.target))
    sent = call(mw, "/v1/completions", [(b"x-request-id", b"nowait")])
    h = hdrs(sent)
    assert h["x-llmco2-carbon-status"] == "pending" and float(h["x-llmco2-wait-ms"]) < 50
    assert json.loads(body(sent)) == {"id": "x"} and CountingLookup.calls == 0
    assert record(tmp_path, "cmpl-nowait-0-0badc0de")["carbon_g"]["total"] > 0


def test_a_cpu_engine_says_its_figures_are_not_a_gpus(sidecar, emitter, monkeypatch):
    import llmco2_vllm.middleware as mwmod
    from llmco2_vllm.platform import CPU_NOTE, on_cpu_platform

    assert on_cpu_platform() is False  # no vLLM in this environment: nothing claimed
    assert "x-llmco2-note" not in hdrs(call(mw_for(json_app({}, {}), sidecar), "/v1/completions"))
    monkeypatch.setattr(mwmod, "platform_note", lambda: CPU_NOTE)
    Engine(emitter).run("cmpl-cpu1-0-1a2b3c4d")
    h = hdrs(call(mw_for(json_app({}, {}), sidecar), "/v1/completions", [(b"x-request-id", b"cpu1")]))
    assert h["x-llmco2-note"] == CPU_NOTE and h["x-llmco2-carbon-status"] == "final"
    Engine(emitter).run("chatcmpl-cpu2-0badc0de")
    sent = call(mw_for(sse_app([b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"], {}), sidecar), "/v1/chat/completions",
                [(b"x-request-id", b"cpu2")])
    events = [e[len("data: "):] for e in body(sent).decode().split("\n\n") if e]
    assert json.loads(events[-2])["note"] == CPU_NOTE and "not a GPU's" in CPU_NOTE


def test_a_request_the_sidecar_could_not_account_says_error(tmp_path):
    """The predictor fails on one request's steps (an injected exception): the sidecar gives it an
    error record (``source: "error"``); the response says ``error`` with the reason, never ``final``
    with a zero figure, in headers and in the stream's carbon event. A healthy request beside it on
    the same sidecar still says ``final`` with its figure."""
    from isolation_kit import POISON_PROMPT, PoisonPredictor

    sc = SidecarThread(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="roofline"),
                       predictor=PoisonPredictor("raise")).start()
    em = Emitter(EngineInfo(engine_name="vllm", model_name="meta-llama/Llama-2-7b-hf", gpu="A100"),
                 EmitterConfig(target=sc.address))
    try:
        t = time.monotonic()
        for step, rid in enumerate(("cmpl-bad-0-0badc0de", "chatcmpl-bad2-0badc0de"), start=1):
            em.emit_step(step, t, t + 0.01, [rid], [POISON_PROMPT], [0], [POISON_PROMPT])
            em.emit_done(rid, output_tokens=1)
            assert em.flush(10.0)  # its own message: the poison costs only it
            t += 0.02
        eng = Engine(em)
        eng.step, eng.t = 10, t
        eng.run("cmpl-good-0-1a2b3c4d")
        rec = record(tmp_path, "cmpl-bad-0-0badc0de")
        assert rec["source"] == "error" and "injected predictor failure" in rec["error"]

        h = hdrs(call(mw_for(json_app({"id": "x"}, {}), sc), "/v1/completions", [(b"x-request-id", b"bad")]))
        assert h["x-llmco2-carbon-status"] == "error"
        assert "injected predictor failure" in h["x-llmco2-error"] and h["x-llmco2-error"].isprintable()
        assert "x-llmco2-carbon-g" not in h and "x-llmco2-energy-j" not in h

        sent = call(mw_for(sse_app([b'data: {"x": 1}\n\n', b"data: [DONE]\n\n"], {}), sc), "/v1/chat/completions",
                    [(b"x-request-id", b"bad2")])
        events = [e[len("data: "):] for e in body(sent).decode().split("\n\n") if e]
        carbon = json.loads(events[-2])
        assert events[-1] == "[DONE]" and carbon["status"] == "error" and carbon["request_id"] == "bad2"
        assert carbon["carbon_g"] is None and carbon["energy_j"] is None
        assert "injected predictor failure" in carbon["error"]

        good = hdrs(call(mw_for(json_app({}, {}), sc), "/v1/completions", [(b"x-request-id", b"good")]))
        assert good["x-llmco2-carbon-status"] == "final" and "x-llmco2-error" not in good
        assert float(good["x-llmco2-carbon-g"]) == pytest.approx(record(tmp_path, "cmpl-good-0-1a2b3c4d")["carbon_g"]["total"],
                                                                 rel=1e-5)
    finally:
        em.close()
        sc.stop()


def test_error_header_text_is_one_printable_line():
    from llmco2_vllm.lookup import CarbonFigure
    from llmco2_vllm.middleware import carbon_headers

    fig = CarbonFigure("r", 0.0, 0.0, 1, True, error="predict: ValueError: bad\nline two \u00e9" + "x" * 400)
    h = dict(carbon_headers(fig))
    assert h[b"x-llmco2-carbon-status"] == b"error"
    err = h[b"x-llmco2-error"].decode("ascii")
    assert err.startswith("predict: ValueError: bad line two ?x") and err.endswith("...") and len(err) == 300


def test_a_predicted_figure_states_the_predictors_expected_error(tmp_path):
    """With the shipped GNN the record, the lookup reply, the header and the streaming event carry the
    predictor's held-out error for the deployment (predictor/heldout.py); the Roofline sidecar above
    has no held-out scores and says nothing (tested by the headers of the first test)."""
    from llmco2_sidecar.hardware import load_gpu
    from llmco2_sidecar.models import load_model
    from llmco2_sidecar.predictor.heldout import expected_error

    sc = SidecarThread(SidecarConfig(port=0, log=str(tmp_path / "carbon.jsonl"), predictor="default")).start()
    em = Emitter(EngineInfo(engine_name="vllm", model_name="meta-llama/Llama-2-7b-hf", gpu="A100"),
                 EmitterConfig(target=sc.address))
    try:
        eng = Engine(em)
        eng.run("cmpl-errA-0-1a2b3c4d")
        sent = call(mw_for(json_app({"id": "cmpl-errA"}, {}), sc), "/v1/completions", [(b"x-request-id", b"errA")])
        rec = record(tmp_path, "cmpl-errA-0-1a2b3c4d")
        want = expected_error(load_model("meta-llama/Llama-2-7b-hf"), load_gpu(rec["gpu"]).gpu_id)
        assert rec["expected_error_pct"] == pytest.approx(want.mape_pct, abs=0.005) and want.mape_pct > 5
        assert float(hdrs(sent)["x-llmco2-expected-error-pct"]) == pytest.approx(want.mape_pct, abs=0.05)
        eng.run("chatcmpl-errB-5e6f7a8b")
        chunks = [b'data: {"id": "chatcmpl-errB"}\n\n', b"data: [DONE]\n\n"]
        out = body(call(mw_for(sse_app(chunks, {}), sc), "/v1/chat/completions", [(b"x-request-id", b"errB")]))
        event = json.loads(out.split(b"data: ")[2].split(b"\n")[0])
        assert event["status"] == "final" and event["expected_error_pct"] == pytest.approx(want.mape_pct, abs=0.05)
    finally:
        em.close()
        sc.stop()


def test_headers_say_nothing_of_an_unknown_error():
    from llmco2_vllm.lookup import CarbonFigure
    from llmco2_vllm.middleware import carbon_event, carbon_headers

    known = CarbonFigure("r", 1.0, 2.0, 1, True, expected_error_pct=16.38)
    unknown = CarbonFigure("r", 1.0, 2.0, 1, True)
    assert dict(carbon_headers(known))[b"x-llmco2-expected-error-pct"] == b"16.4"
    assert b"x-llmco2-expected-error-pct" not in dict(carbon_headers(unknown))
    assert carbon_event("r", known)["expected_error_pct"] == 16.4 and "expected_error_pct" not in carbon_event("r", unknown)
