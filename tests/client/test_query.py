"""The lookup clients (blocking and asyncio) against a real sidecar."""

from __future__ import annotations

import asyncio
import socket

from sidecar_testkit import GPU, MODEL

from llmco2_sidecar.client import AsyncCarbonQuery, CarbonQuery, Emitter, EmitterConfig, EngineInfo


def test_blocking_and_async_lookups(sidecar):
    em = Emitter(EngineInfo(engine_name="t", model_name=MODEL, gpu=GPU, instance_id="q"),
                 EmitterConfig(target=sidecar.address))
    em.emit_step(1, 0.0, 0.02, ["chatcmpl-X-1a2b3c4d", "chatcmpl-Y-0000"], [20, 30], [0, 0], [20, 30])
    em.emit_step(2, 0.03, 0.04, ["chatcmpl-X-1a2b3c4d", "chatcmpl-Y-0000"], [1, 1], [20, 30], [20, 30])
    assert em.flush(10)
    q = CarbonQuery(sidecar.address)
    running = q.get("chatcmpl-Y-0000")
    assert running[0].state == "running" and not running[0].final and running[0].energy_j > 0
    em.emit_done("chatcmpl-X-1a2b3c4d", 2)
    [rec] = q.get("chatcmpl-X-1a2b3c4d", wait_s=5)
    assert rec.final and rec.output_tokens == 2 and rec.carbon_g > 0
    assert rec.energy_j == rec.prefill_j + rec.decode_j + rec.serving_j
    assert q.get("nobody") == []
    q.close()

    async def main():
        aq = AsyncCarbonQuery(sidecar.address)
        recs = await aq.get("chatcmpl-X-", prefix=True, wait_s=1)
        await aq.close()
        return recs

    recs = asyncio.run(main())
    assert [r.request_id for r in recs] == ["chatcmpl-X-1a2b3c4d"] and recs[0].final
    em.close()


def test_unreachable_sidecar_gives_empty_not_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    q = CarbonQuery(f"127.0.0.1:{port}")
    assert q.get("x", wait_s=0.1) == []
    q.close()
