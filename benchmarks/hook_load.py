"""The load client of benchmarks/hook_overhead.py's throughput part: a closed loop of OpenAI
completion requests (mixed prompt lengths, fixed output length, ``ignore_eos``) against one server,
with each response's tokens, latency and ``x-llmco2-wait-ms``."""

from __future__ import annotations

import json
import statistics
import threading
import time

PROMPTS = [
    "Hello world",
    "Carbon accounting for language model serving measures energy per request. " * 3,
    "Decode steps generate one token per running request. " * 6,
    "A sidecar receives one event per engine step and attributes energy to requests. " * 2,
]


def _load(port: int, n_requests: int, concurrency: int, max_tokens: int) -> dict:
    """Closed loop: ``concurrency`` clients, each sends its next request when the previous response
    (with its carbon headers, when the switch is on) has arrived."""
    from llmco2_e2e_harness import http_request

    todo = list(range(n_requests))
    lock = threading.Lock()
    tokens = [0]
    errors = [0]
    latencies: list[float] = []
    waits_ms: list[float] = []  # x-llmco2-wait-ms: how long the middleware held each response for its carbon
    carbon_status: dict[str, int] = {}

    def worker():
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            body = {"model": "tiny", "prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": max_tokens,
                    "ignore_eos": True, "temperature": 0.0}
            t = time.perf_counter()
            status, headers, payload = http_request(port, "POST", "/v1/completions", body, timeout_s=300)
            latency = time.perf_counter() - t
            with lock:
                if status == 200:
                    tokens[0] += json.loads(payload)["usage"]["completion_tokens"]
                    latencies.append(latency)
                    # "final": x-llmco2-carbon-g/-energy-j present; "pending": the wait ran out; "none": no middleware
                    key = headers.get("x-llmco2-carbon-status", "none")
                    if key == "final" and "x-llmco2-carbon-g" not in headers:
                        key = "final-without-figure"
                    carbon_status[key] = carbon_status.get(key, 0) + 1
                    if "x-llmco2-wait-ms" in headers:
                        waits_ms.append(float(headers["x-llmco2-wait-ms"]))
                else:
                    errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    latencies.sort()
    waits_ms.sort()
    return {"output_tokens": tokens[0], "wall_s": wall, "tokens_per_s": tokens[0] / wall, "errors": errors[0],
            "responses": len(latencies),
            "latency_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "latency_p90_ms": 1000 * latencies[int(0.9 * len(latencies))] if latencies else None,
            "carbon_status": carbon_status, "waits_ms": waits_ms}
