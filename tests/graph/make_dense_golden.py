"""Regenerate ``data/dense_golden.npz``: kernel-graph features of dense models as computed before the
MoE work (commit a85cf50). Run only to record a deliberate change of the dense figures:
``python tests/graph/make_dense_golden.py``. ``test_dense_golden.py`` compares against it bit for bit.

The ``|shares`` entries were rewritten on 2026-12-06 (and only they, the features kept as recorded): the
shares then summed each kernel group's Roofline times as one product of linear time forms
(graph/shares.py), which moves them by at most 4.3e-16 relative (summation order); the test
``test_shares_equal_the_per_group_roofline`` holds them to the per-group Roofline within 1e-13."""

from pathlib import Path

import numpy as np

from llmco2_sidecar.graph import request_shares, step_features
from llmco2_sidecar.hardware import load_gpu
from llmco2_sidecar.models import load_model
from llmco2_sidecar.predictor.api import Deployment
from llmco2_sidecar.workload import Parallelism, StepBatch

CASES = [("meta-llama/Llama-2-7b-hf", "A100", 1, 1), ("meta-llama/Llama-3.1-70B", "H100", 4, 2),
         ("Qwen/Qwen3-8B", "H100", 2, 1), ("google/gemma-2-9b", "L40S", 1, 1), ("Qwen/Qwen2.5-7B", "B200", 1, 1),
         ("microsoft/Phi-3-mini-4k-instruct", "A100-SXM4-40GB", 1, 1)]
STEPS = [[(0, 700)], [(0, 300), (512, 1), (4000, 1), (9000, 1)], [(8191, 1)] * 64, [(100, 37), (5000, 1)]]
FIELDS = ("node_x", "global_x", "edge_index", "flops", "memory_bytes", "network_bytes", "flops_prefill", "flops_decode",
          "memory_bytes_prefill", "memory_bytes_decode", "roofline_s", "roofline_s_prefill", "roofline_s_decode")


def compute() -> dict[str, np.ndarray]:
    out = {}
    steps = StepBatch.from_steps(STEPS, duration_s=[0.05, None, 0.02, None])
    for model, gpu, tp, pp in CASES:
        dep = Deployment(load_model(model), load_gpu(gpu), Parallelism(tp=tp, pp=pp))
        f = step_features(dep, steps)
        for name in FIELDS:
            out[f"{model}|{name}"] = np.asarray(getattr(f, name))
        out[f"{model}|shares"] = request_shares(dep, steps)
    return out


if __name__ == "__main__":
    path = Path(__file__).with_name("data") / "dense_golden.npz"
    np.savez_compressed(path, **compute())
    print(path, path.stat().st_size, "bytes")
