"""The human-readable summary of a replay (``llmco2 replay`` and ``llmco2 demo`` without ``--json``):
one line each for the setup, the carbon settings, the trace, the simulated engine, energy, carbon,
latency, SCI, the time-varying intensity and the expected error, from :func:`~.replay.run_replay`'s
summary dict."""

from __future__ import annotations


def fmt_summary(s: dict) -> str:
    """The human-readable summary (``llmco2 replay`` without ``--json``)."""
    st, e, c, lat, sim = s["setup"], s["energy_j"], s["carbon_g"], s["latency_s"], s["simulation"]
    par = f"TP {st['tp']}" + (f", PP {st['pp']}" if st["pp"] > 1 else "")
    wh = 1 / 3600.0
    ms = lambda v: "n/a" if v is None else f"{v * 1e3:.1f}"  # noqa: E731
    lines = [
        f"setup: {st['model']} on {st['n_gpus']} x {st['gpu']} ({par}); max_num_seqs {st['max_num_seqs']}, "
        f"max_num_batched_tokens {st['max_num_batched_tokens']}, chunked prefill {'on' if st['chunked_prefill'] else 'off'}, "
        f"{st['policy']} scheduling; "
        f"predictor {st['predictor']}",
        f"carbon: PUE {st['pue']}, " + (f"{st['carbon_intensity_g_per_kwh']} gCO2e/kWh (region {st['region']})"
                                        if st["carbon_intensity_g_per_kwh"] is not None else "hourly intensity series"),
        f"trace: {s['trace']['path']} ({s['trace']['format']}): {s['requests']} requests replayed over "
        f"{s['duration_s']:.1f} s, {s['tokens']['prompt']} prompt + {s['tokens']['output']} output tokens"
        + (f"; {sim['rejected']} rejected (e.g. {sim['rejected_examples'][0]})" if sim["rejected"] else "")
        + (f"; {sim['truncated_outputs']} outputs cut at the model's {sim['max_model_len']}-token context"
           if sim.get("truncated_outputs") else "")
        + (f"; {s['trace']['skipped_zero_tokens']} rows without tokens skipped" if s["trace"]["skipped_zero_tokens"] else ""),
        f"engine (simulated): {sim['steps']} steps, busy {sim['busy_s']:.1f} s, {sim['preemptions']} preemptions, "
        f"up to {sim['max_running']} running, KV cache {sim['kv_capacity_tokens']} tokens",
        f"energy: {e['total'] * wh:.2f} Wh = prefill {e['prefill'] * wh:.2f} + decode {e['decode'] * wh:.2f} + GPU idle "
        f"{e['gpu_idle'] * wh:.2f} + host {e['host'] * wh:.2f} Wh; {s['j_per_output_token']:.3f} J per output token",
        f"carbon: {c['total']:.2f} gCO2e ({c['operational']:.2f} operational + {c['embodied']:.2f} embodied); "
        f"{s['g_per_1k_output_tokens']:.3f} g per 1,000 output tokens",
        f"latency: TTFT p50 {ms(lat['ttft_p50'])} / p99 {ms(lat['ttft_p99'])} ms, TPOT p50 {ms(lat['tpot_p50'])} / "
        f"p99 {ms(lat['tpot_p99'])} ms, end-to-end p50 {ms(lat['e2e_p50'])} / p99 {ms(lat['e2e_p99'])} ms",
    ]
    sci = s.get("sci") or {}
    if sci.get("g_per_request") is not None:
        lines.append(f"SCI ((E x I) + M per R, idle included): {sci['g_per_request']:.4f} gCO2e per request, "
                     f"{sci['g_per_1k_output_tokens']:.4f} per 1,000 output tokens")
    if "intensity" in s:
        i = s["intensity"]
        lines.append(f"time-varying intensity: {c['operational']:.2f} g operational vs {i['operational_g_at_series_mean']:.2f} g "
                     f"at the series mean ({i['series_mean_g_per_kwh']:.1f} g/kWh): {i['difference_g']:+.2f} g "
                     f"({i['difference_pct']:+.1f}%), effective {i['effective_g_per_kwh']:.1f} g/kWh; "
                     f"{i['difference_vs_region_annual_g']:+.2f} g against region {i['region']}'s annual "
                     f"{i['region_annual_g_per_kwh']:g} g/kWh")
    if s.get("expected_error_pct"):
        lines.append(f"expected error: about +-{s['expected_error_pct']:.0f}% ({s['predictor']}'s held-out MAPE on the most "
                     "similar data it never saw; predictor/heldout.py)")
    lines.append(f"note: {s['note']}")
    return "\n".join(lines)
