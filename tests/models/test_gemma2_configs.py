"""The Gemma-2 2B and 27B configs (verified for their ML.ENERGY v2 rows, which stay out of training: benchmarks/results/gemma_rows.md; copies listed in configs/SOURCE.md)."""

import json

import pytest

from llmco2_sidecar.models import bundled_status, load_model
from llmco2_sidecar.models.catalog import CONFIG_DIR


@pytest.mark.parametrize("hf_id,billions", [
    ("google/gemma-2-2b", 2.6),    # published size 2.6B (Gemma 2 report / model card)
    ("google/gemma-2-27b", 27.2),  # published size 27.2B
])
def test_parameter_count_is_the_published_size(hf_id, billions):
    assert load_model(hf_id).total_params / 1e9 == pytest.approx(billions, rel=0.01)


@pytest.mark.parametrize("alias,base", [("google/gemma-2-2b-it", "google/gemma-2-2b"),
                                        ("google/gemma-2-27b-it", "google/gemma-2-27b")])
def test_instruct_ids_resolve_to_the_base_architecture(alias, base):
    m = load_model(alias)
    assert m.name == base and m.verified
    assert bundled_status()[base] is True


def test_27b_projections_use_head_dim_not_hidden_over_heads():
    """27B: head_dim 128 while hidden / heads = 144, so q/o are 4608 x 4096, not 4608 x 4608; a missed
    head_dim would add 46 x 2 x 4608 x 512 = 217M parameters (0.8%) and the matching FLOPs."""
    m = load_model("google/gemma-2-27b")
    assert (m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim) == (4608, 32, 16, 128)
    assert m.q_size == 4096 and m.kv_size == 2048
    assert m.kv_bytes_per_token == 2 * 46 * 16 * 128 * 2


def test_gemma2_ties_its_embeddings_and_the_files_leave_the_key_out():
    """The official Gemma-2 files have no tie_word_embeddings (the transformers default, true, applies):
    the 256000 x hidden embedding is counted once."""
    for hf_id in ("google/gemma-2-2b", "google/gemma-2-27b"):
        cfg = json.loads((CONFIG_DIR / (hf_id.replace("/", "__") + ".json")).read_text())
        assert "tie_word_embeddings" not in cfg
        assert load_model(hf_id).tie_word_embeddings is True


def test_27b_file_leaves_out_the_disputed_storage_dtype():
    """The two 27B copies disagree only on torch_dtype (float32 base fixture, bfloat16 MLC preset), so
    the key is left out (configs/SOURCE.md); the serving precision does not come from it."""
    cfg = json.loads((CONFIG_DIR / "google__gemma-2-27b.json").read_text())
    assert "torch_dtype" not in cfg
    assert load_model("google/gemma-2-27b").weight_bits == 16


def test_kernel_graph_sizes_27b_q_and_o_from_head_dim():
    """The kernel graph's q/o GEMMs of the 27B are 4608 -> 4096 and 4096 -> 4608 (not 4608 x 4608), per GPU at TP 2."""
    from llmco2_sidecar.graph.kernels import layer_kernels
    from llmco2_sidecar.workload import Parallelism

    m = load_model("google/gemma-2-27b-it")
    for tp in (1, 2):
        ks = {k.name: k for k in layer_kernels(m, Parallelism(tp=tp))}
        assert ks["q_proj"].dims[:2] == (4608, 4096 // tp)
        assert ks["k_proj"].dims[:2] == (4608, 2048 // tp)
        assert ks["o_proj"].dims[:2] == (4096 // tp, 4608)
