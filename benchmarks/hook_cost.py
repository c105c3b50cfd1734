"""Part 1 of ``benchmarks/hook_overhead.py``: the hook's own cost per engine step (real vLLM
``SchedulerOutput`` objects through the patched scheduler methods, minus the same calls unpatched),
back to back ("hot") and with engine-like pacing (:func:`_engine_work`)."""

from __future__ import annotations

import statistics
import time

from hook_overhead_report import PACING

# ---- part 1: the hook's own cost ------------------------------------------------------------------
def _steps(n_running: int, n_steps: int, chunk: int = 512):
    """A steady state: n_running requests, one leaves and one enters per step.

    Returns, per step, a function that builds that step's real ``SchedulerOutput`` (vLLM's own
    ``schedule()`` builds it right before the hook reads it, so the stand-in scheduler builds it
    inside its ``schedule()`` too, in both the hooked and the plain runs), the leaving request's
    id, and the new request's prompt length."""
    from vllm.v1.core.sched.output import CachedRequestData, NewRequestData, SchedulerOutput

    next_id = [0]

    def new_id() -> str:
        next_id[0] += 1
        return f"cmpl-{next_id[0]:032x}-0-{next_id[0] % 10**8:08d}"

    def builder(rid_new, prompt_ids, ids, ctx, nst):
        def build():
            new_req = NewRequestData(req_id=rid_new, prompt_token_ids=prompt_ids, mm_features=[],
                                     sampling_params=None, pooling_params=None, block_ids=([],),
                                     num_computed_tokens=0, lora_request=None)
            cached = CachedRequestData(req_ids=list(ids), resumed_req_ids=set(), new_token_ids=[], all_token_ids={},
                                       new_block_ids=[None] * len(ids), num_computed_tokens=list(ctx),
                                       num_output_tokens=[1] * len(ids))
            return SchedulerOutput(scheduled_new_reqs=[new_req], scheduled_cached_reqs=cached,
                                   num_scheduled_tokens=dict(nst), total_num_scheduled_tokens=sum(nst.values()),
                                   scheduled_spec_decode_tokens={}, scheduled_encoder_inputs={},
                                   finished_req_ids=set(), free_encoder_mm_hashes=[])
        return build

    running = {new_id(): 200 + 37 * i % 1500 for i in range(n_running)}  # rid -> tokens in the KV cache
    out = []
    for _ in range(n_steps):
        rid_new = new_id()
        prompt = 300 + (next_id[0] * 131) % 1200
        ids = list(running)
        nst = {r: 1 for r in ids}
        nst[rid_new] = min(chunk, prompt)
        leaving = ids[0]
        out.append((builder(rid_new, list(range(prompt)), ids, [running[r] for r in ids], nst), leaving, prompt))
        del running[leaving]
        for r in ids[1:]:
            running[r] += 1
        running[rid_new] = min(chunk, prompt)
    return out


class _Req:
    """A leaving request as ``_free_request`` sees it: vLLM's own status enum, ``num_output_tokens`` a
    property over the output token list (as ``vllm.v1.request.Request`` has them)."""

    __slots__ = ("request_id", "_output_token_ids", "status")

    def __init__(self, rid: str, status):
        self.request_id = rid
        self._output_token_ids = [0] * 17
        self.status = status

    @property
    def num_output_tokens(self) -> int:
        return len(self._output_token_ids)


def hook_cost(target: str, sizes=(8, 64, 256), n_steps: int = 3000, pace_s: float = 0.001) -> list[dict]:
    from types import SimpleNamespace

    from llmco2_vllm.patch import patch_scheduler
    from llmco2_vllm.settings import Settings
    from vllm.v1.request import RequestStatus

    hf = SimpleNamespace(model_type="llama", hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                         num_attention_heads=32, num_key_value_heads=32, head_dim=128, vocab_size=32000,
                         tie_word_embeddings=False)
    cfg = SimpleNamespace(model_config=SimpleNamespace(hf_text_config=hf, dtype="bfloat16",
                                                       served_model_name="meta-llama/Llama-2-7b-hf"),
                          parallel_config=SimpleNamespace(tensor_parallel_size=1, pipeline_parallel_size=1,
                                                          data_parallel_size=1, data_parallel_rank=0),
                          cache_config=SimpleNamespace(cache_dtype="auto"))
    results = []
    for size in sizes:
        steps = _steps(size, n_steps)

        class Sched:
            def __init__(self, vllm_config):
                self.vllm_config = vllm_config
                self.requests = dict.fromkeys(range(size + 1))  # the running requests (the hook reads len())
                self.current = None

            def schedule(self):
                return self.current()  # builds the step's SchedulerOutput, as vLLM's schedule() does

            def update_from_output(self, so, model_output=None):
                return {}

            def _free_request(self, request, delay_free_blocks=False):
                return None

            def shutdown(self):
                pass

        plain = Sched(cfg)

        class Hooked(Sched):
            pass

        patch_scheduler(Settings(target=target, gpu="A100-SXM4-80GB"), Hooked)
        hooked = Hooked(cfg)
        emitter = hooked._llmco2_hook.emitter
        deadline = time.monotonic() + 30
        while not emitter.stats().connected and time.monotonic() < deadline:
            time.sleep(0.05)

        def run(s, series, mode):
            pc = time.perf_counter_ns
            for build, leaving, _ in series:
                s.current = build
                req = _Req(leaving, RequestStatus.FINISHED_LENGTH_CAPPED)
                t = pc()
                so = s.schedule()
                s.update_from_output(so)
                s._free_request(req)
                yield pc() - t
                if mode == "engine-like":
                    _engine_work(pace_s)

        third = len(steps) // 3
        row = {"running_requests": size, "slices_per_step": size + 1}
        for k, mode in enumerate(PACING):
            series = steps[k * third:(k + 1) * third]
            warm, measured = series[: third // 10], series[third // 10:]
            list(run(hooked, warm, mode))
            list(run(plain, warm, mode))
            t_hooked = list(run(hooked, measured, mode))
            t_plain = list(run(plain, measured, mode))
            diff_us = sorted((a - b) / 1000.0 for a, b in zip(t_hooked, t_plain))
            row[mode] = {"steps_measured": len(measured), "mean_us": statistics.fmean(diff_us),
                         "p50_us": statistics.median(diff_us), "p99_us": diff_us[int(0.99 * len(diff_us))],
                         "unhooked_call_mean_us": statistics.fmean(b / 1000 for b in t_plain)}
            print(f"hook cost, {size:4d} running, {mode:5s}: mean {row[mode]['mean_us']:.1f} us, "
                  f"p50 {row[mode]['p50_us']:.1f} us, p99 {row[mode]['p99_us']:.1f} us per step", flush=True)
        assert emitter.flush(30.0), "the sidecar did not acknowledge the benchmark's steps"
        st = emitter.stats()
        hooked.shutdown()
        row["emitter"] = {"emitted": st.emitted, "dropped": st.dropped, "steps_accepted": st.steps_accepted,
                          "steps_rejected": st.steps_rejected, "done_accepted": st.done_accepted}
        results.append(row)
    return results


_SCRATCH = bytearray(8 << 20)
_ZEROS = bytes(8 << 20)


def _engine_work(seconds: float) -> None:
    """Stand-in for an engine step between two hook calls: vLLM's own Python work overwrites the
    caches (8 MiB copied, GIL held), then the thread waits ``seconds`` for the model step (GIL
    released: the emitter's sender thread runs then). The wait is not shortened by the copy's time:
    on this box the copy alone takes about 0.9 ms, and a 1 ms step that included it left the sender
    almost no GIL-free time (the hook-cost parts run before 2026-11-26 14:42 UTC were paced that way)."""
    _SCRATCH[:] = _ZEROS
    time.sleep(seconds)
