"""Mixture-of-experts models through the whole sidecar over real gRPC: an engine identity with the
expert fields (as the vLLM plugin sends them) or a catalog name, steps, per-request records with
carbon; and identities the graph cannot cost refused naming the field, the sidecar serving on."""

from __future__ import annotations

import time

import grpc
import pytest
from sidecar_testkit import Stream, identity, make_config, rpc_error, steps_message

from llmco2_sidecar._proto import events_pb2 as pb
from llmco2_sidecar._proto import sidecar_pb2 as spb
from llmco2_sidecar._proto import sidecar_pb2_grpc
from llmco2_sidecar.client import Emitter, EmitterConfig, EngineInfo
from llmco2_sidecar.models import load_model
from llmco2_sidecar.models.identity import architecture_from_spec
from llmco2_sidecar.service.carbon_log import read_records
from llmco2_sidecar.service.server import SidecarThread

pytestmark = pytest.mark.timeout(120)


def _drive(em: Emitter, n_requests: int = 6) -> list[str]:
    """Prefill chunks, then decodes; every request finishes."""
    rids = [f"q{i}" for i in range(n_requests)]
    t = 0.0
    em.emit_step(1, t, t + 0.05, rids, [96] * n_requests, [0] * n_requests, [96] * n_requests)
    t += 0.05
    for s in range(2, 12):
        em.emit_step(s, t, t + 0.02, rids, [1] * n_requests, [96 + s - 2] * n_requests, [96] * n_requests)
        t += 0.02
    for r in rids:
        em.emit_done(r, output_tokens=11, time_s=t)
    return rids


@pytest.mark.parametrize("predictor", ["default", "roofline"])
def test_moe_identity_through_the_pipeline(tmp_path, predictor):
    spec = load_model("openai/gpt-oss-120b")
    info = EngineInfo(engine_name="vllm", model_name="gpt-oss-120b-served", gpu="H100", tp=2, dp=2, ep=4,
                      architecture=architecture_from_spec(spec))
    with SidecarThread(make_config(tmp_path, predictor=predictor)) as sc:
        em = Emitter(info, EmitterConfig(target=sc.address, clock=time.monotonic))
        rids = _drive(em)
        em.close(timeout_s=10)
        sc.flush()
        stub = sidecar_pb2_grpc.CarbonSidecarStub(grpc.insecure_channel(sc.address))
        rec = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="q0", wait_s=5.0)).records[0]
        assert rec.model == "gpt-oss-120b-served" and rec.energy_j.total > 0 and rec.carbon_g.total > 0
    recs = read_records(sc.config.log)
    assert sorted(r["request_id"] for r in recs) == rids
    assert all(r["energy_j"]["prefill"] > 0 and r["energy_j"]["decode"] > 0 for r in recs)
    # the stream's deployment is the MoE one the identity described
    dep = next(iter(sc.core.streams.values())).deployment
    assert dep.model.num_experts == 128 and dep.model.expert_bits == 4.25 and dep.parallel.ep == 4


def test_moe_catalog_name_and_mla_through_the_pipeline(sidecar, stub):
    s = Stream(stub)
    assert s.send(identity(model_name="deepseek-ai/DeepSeek-R1", gpu="H200", tp=8, dp=2, ep=16)).stream_id == "engine-1"
    ack = s.send(steps_message(1, [(1, 0.0, 0.2, [("a", 2048, 0, 2048), ("b", 512, 0, 512)]),
                                   (2, 0.21, 0.25, [("a", 1, 2048, 2048), ("b", 1, 512, 512)])],
                               done=[("a", 2), ("b", 2)]))
    assert ack.steps_accepted == 2 and ack.steps_rejected == 0
    a = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="a", wait_s=5.0)).records[0]
    b = stub.GetRequestCarbon(spb.RequestCarbonQuery(request_id="b", wait_s=5.0)).records[0]
    assert a.energy_j.total > b.energy_j.total > 0  # 4x the prompt: more of the steps' work
    s.close()


@pytest.mark.parametrize("arch, kw, field", [
    (dict(num_experts=8, experts_per_token=9), {}, "identity.architecture.experts_per_token"),
    (dict(num_experts=8, experts_per_token=2, quant_method="bitsandbytes"), {}, "identity.architecture.quant_method"),
    (dict(experts_per_token=2), {}, "identity.architecture.num_experts"),
    (dict(num_experts=8, experts_per_token=2, local_attention="ring"), {}, "identity.architecture.local_attention"),
    (dict(num_experts=6, experts_per_token=2), {"tp": 2, "dp": 2, "ep": 4}, "identity.ep"),
    (dict(num_experts=8, experts_per_token=2), {"tp": 2, "ep": 3}, "identity.ep"),
    (dict(num_experts=8, experts_per_token=2, expert_intermediate_size=1001), {"tp": 2}, "identity.tp"),
])
def test_moe_identities_the_graph_cannot_cost_name_the_field(stub, arch, kw, field):
    base = dict(model_type="mixtral", hidden_size=1024, intermediate_size=2048, num_layers=4, num_heads=8,
                num_kv_heads=4, vocab_size=1000)
    code, details = rpc_error(lambda: Stream(stub).send(identity(architecture=pb.ModelArchitecture(**base, **arch), **kw)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(field), details
    assert Stream(stub).send(identity("other")).stream_id == "other"  # still serving


def test_estimate_rpc_for_a_moe_model_with_expert_parallelism(stub):
    from google.protobuf import json_format

    reply = stub.Estimate(spb.EstimateRequest(model="Qwen/Qwen3-235B-A22B-Instruct-2507-FP8", gpu="H100", batch=8,
                                              prompt_len=512, output_len=64, tp=4, ep=8, dp=2))
    r = json_format.MessageToDict(reply.result)
    assert r["ep"] == 8 and r["model_info"]["experts"] == 128 and r["model_info"]["weight_bits"] == 8
    assert r["energy_j"]["total"] > 0 and r["network_bytes"]["decode"] > 0
    code, details = rpc_error(lambda: stub.Estimate(spb.EstimateRequest(model="Qwen/Qwen3-30B-A3B", gpu="H100", batch=1,
                                                                    prompt_len=8, output_len=8, tp=2, ep=3)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("ep"), details
