"""The soak's report: soak.md and soak.png from the results dictionary of ``benchmarks/soak.py``
(``python benchmarks/soak.py --rerender results/soak.json`` writes both again)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


# ---- reports --------------------------------------------------------------------------------------
def render(r: dict) -> str:
    s, m, lat, k = r["settings"], r["machine"], r["latency"], r["kill"]
    d = r["sidecar_defaults"]
    rc = r["recheck"]
    rc_before = sum(e["finished_before_oldest_record_on_disk"] for e in rc["engines"])
    o = lat["outside_outage"]
    g = r["rss_growth_after_warmup"]

    def gtxt(x):
        if not x:
            return "not enough samples after warm-up"
        return (f"{x['rss_start_mb']:.0f} -> {x['rss_end_mb']:.0f} MB ({x['growth_pct']:+.1f}%, max {x['rss_max_mb']:.0f} MB, "
                f"{x['from_s'] / 60:.1f}-{x['to_s'] / 60:.1f} min)")

    def ms(v):
        return "n/a" if v is None else f"{v:,.1f} ms"

    drops = sum(e["dropped"] for e in r["engines"])
    lines = [
        f"# Soak: {s['engines']} engines, {s['rate_steps_per_s']:,.0f} steps/s, a SIGKILL at {s['kill_at_fraction']:.0%} "
        "of the run", "",
        f"Command: `{r['command']}` ({r['date_utc']} UTC, commit {m['commit']}). Machine: {m['cpu']}, "
        f"{m['logical_cpus']} logical CPUs, {m['memory_gib']} GiB, Python {m['python']}; **shared with other busy "
        f"work during the run** (1-minute load average {m['load_average_1m_at_start']:.1f} at the start, "
        f"{max(x['load_1m'] for x in r['samples']):.1f} at its highest{'; ' + r['concurrent_work'] if r.get('concurrent_work') else ''}). "
        "Nothing pinned: the sidecar, the four engine processes and everyone else's work share the CPUs."
        + (f" {r['machine']['commit_note']}." if r['machine'].get('commit_note') else ""), "",
        f"Workload: {s['engines']} engines ({s['model']} on {s['gpu']}), {s['rate_steps_per_s']:,.0f} steps/s in all "
        f"(paced on the engine clock), at most {s['max_running_per_engine']} requests running per engine, "
        f"{s['chunk_tokens']}-token step budget (chunked prefill), prompt and output lengths from the {s['trace']}. "
        f"The real `Emitter` in each engine process, a real `llmco2 serve` subprocess with its defaults.", "",
        "| measure | result | target |", "|---|---|---|",
        f"| duration, steps emitted | {s['minutes']:g} min, {r['steps_emitted']:,} ({r['steps_per_s_achieved']:,.0f} steps/s) | 5,000 steps/s |",
        f"| requests finished / with a record / lost (live count of the log while it rotated) | {r['finished']:,} / "
        f"{r['records']:,} / " + (f"{r['lost']:,}{r['lost_note']}" if r.get('lost_note') else f"**{r['lost']:,}**")
        + " | 0 lost |",
        f"| the same from the files on disk after the run (`--recheck`): requests checked / missing / duplicated | "
        f"{rc['checked']:,} (all finished after the oldest record still on disk; {rc_before:,} earlier ones had "
        f"rotated away) / **{rc['missing']}** / {rc['duplicates_on_disk']} | 0 |",
        f"| records announced on `WatchFinished` | {lat['records_timed']:,} of {r['finished']:,} | |",
        f"| duplicate records, `source: error` records (live count) | {r['duplicate_records']}, {r['error_records']} | 0 |",
        f"| events dropped by the emitters (buffer full) | {drops} | 0 |",
        f"| SIGKILL at, sidecar listening again after (journal replayed) | {k.get('at_s', 0) / 60:.1f} min, "
        f"{k.get('restart_ready_s', 0):.1f} s | |",
        f"| step end -> record, p50 / p99 / p99.9 / max, outside the outage window | {ms(o['p50_ms'])} / **{ms(o['p99_ms'])}** / "
        f"{ms(o['p999_ms'])} / {ms(o['max_ms'])} ({o['n']:,} records) | p99 <= 20 ms (issue 3, on an idle core) |",
        f"| the same over all timed records (the outage included) | {ms(lat['p50_ms'])} / {ms(lat['p99_ms'])} / - / "
        f"{ms(lat['max_ms'])} ({lat['records_timed']:,}) | |",
        f"| sidecar RSS after warm-up ({s['warmup_min']:g} min), before the kill | {gtxt(g['before_kill'])} | < 10% growth |",
        f"| sidecar RSS after warm-up, after the restart | {gtxt(g['after_restart'])} | < 10% growth |",
        f"| journal size, largest sample | {r['journal_max_bytes'] / 2**20:,.1f} MB (segments of "
        f"{d['journal_max_bytes'] / 2**20:g} MB, checkpointed and deleted once their records are written) | bounded |",
        f"| carbon log + rotations, largest sample | {r['log_max_bytes'] / 2**20:,.1f} MB (rotated at "
        f"{d['log_max_bytes'] / 2**20:g} MB, {d['log_backups']} kept) | bounded |",
        f"| CPU: the sidecar / the four engine processes (generator + emitter) | "
        f"{r['samples'][-1]['sidecar_cpu_s']:,.0f} s ({r['samples'][-1]['sidecar_cpu_s'] / r['samples'][-1]['t_s']:.2f} "
        f"of a core on average) / {sum(e.get('cpu_s', 0) for e in r['engines']):,.0f} s | |",
        "",
        f"The outage window excluded from the first latency row: requests finished from 1 s before the SIGKILL to "
        f"30 s after the restarted sidecar listened ({o['excluded_window_s'][0]:.0f}-{o['excluded_window_s'][1]:.0f} s). "
        "Records replayed from the journal at the restart reach the log but not the `WatchFinished` stream (it was "
        "not open yet), so they count as recorded but are not timed. Latency is measured from the `emit_done` call "
        "right after a request's last step (in the engine process) to the record's arrival on `WatchFinished` in "
        "the soak's main process (both CLOCK_MONOTONIC): the emitter's queue, gRPC both ways, ingest, the journal, "
        "the micro-batch wait, prediction and attribution.", "",
        "Per minute (step end -> record): " + "; ".join(
            f"{x['minute']}: p99 {x['p99_ms']:,.0f} ms" for x in lat["per_minute"]) + ".", "",
        "![RSS, journal, latency](soak.png)", "",
        "Over time (every sample in soak.json):", "",
        "| minute | sidecar RSS MB | journal MB | carbon log MB | requests finished | records | sidecar CPU s | load 1m |",
        "|---|---|---|---|---|---|---|---|",
    ]
    every = max(1, len(r["samples"]) // 16)
    picked = r["samples"][::every]
    if picked[-1] is not r["samples"][-1]:
        picked.append(r["samples"][-1])
    for x in picked:
        lines.append(f"| {x['t_s'] / 60:.1f} | {x['rss_mb'] or 0:.0f} | {x['journal_bytes'] / 2**20:.1f} | "
                     f"{x['log_bytes'] / 2**20:.1f} | {x['finished']:,} | {x['records']:,} | {x['sidecar_cpu_s']:,.0f} | "
                     f"{x['load_1m']:.1f} |")
    lines.append("")
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s["t_s"] for s in r["samples"]]) / 60.0
    fig, ax = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax[0].plot(t, [s["rss_mb"] or np.nan for s in r["samples"]], color="C0")
    ax[0].set_ylabel("sidecar RSS (MB)")
    ax[1].plot(t, [s["journal_bytes"] / 2**20 for s in r["samples"]], label="journal", color="C1")
    ax[1].plot(t, [s["log_bytes"] / 2**20 for s in r["samples"]], label="carbon log + rotations", color="C2")
    ax[1].set_ylabel("MB on disk")
    ax[1].legend(loc="upper left")
    pb_ = r["latency"]["per_bin"]
    mid = [(x["from_s"] + r["latency"]["bin_s"] / 2) / 60.0 for x in pb_]
    ax[2].plot(mid, [x["p99_ms"] for x in pb_], marker=".", label=f"p99 per {r['latency']['bin_s']:g} s", color="C3")
    ax[2].plot(mid, [x["p50_ms"] for x in pb_], marker=".", label="p50", color="C4")
    ax[2].set_yscale("log")
    ax[2].set_ylabel("step end -> record (ms)")
    ax[2].set_xlabel("minutes")
    ax[2].legend(loc="upper left")
    k = r["kill"]
    for a in ax:
        if k:
            a.axvline(k["at_s"] / 60.0, color="k", ls="--", lw=0.8)
            a.axvline(k["ready_at_s"] / 60.0, color="k", ls=":", lw=0.8)
    ax[0].set_title(f"soak: {r['settings']['engines']} engines, {r['settings']['rate_steps_per_s']:,.0f} steps/s, "
                    "SIGKILL (dashed) and restart (dotted)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
