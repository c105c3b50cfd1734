import pytest

from llmco2_sidecar.errors import InputError
from llmco2_sidecar.hardware import list_gpus, load_catalog, load_gpu, load_server

REQUIRED = ["A100-SXM4-40GB", "A100-SXM4-80GB", "H100-SXM5-80GB", "H100-PCIe-80GB", "H200-SXM-141GB",
            "GH200-96GB-HBM3", "L4", "L40S", "B200"]


def test_required_gpus_present_with_sources():
    ids = list_gpus()
    for gid in REQUIRED:
        assert gid in ids
        g = load_gpu(gid)
        assert g.sources["all"], gid
        assert g.sources.get("idle_w"), gid  # measured or stated assumption
        assert g.die_area_mm2 > 0 and g.process_node
        assert g.tdp_w > g.idle_w > 0


def test_dense_not_sparse_figures():
    # NVIDIA prints 624 (A100) and 1979 (H100 SXM) BF16 TFLOP/s *with sparsity*; dense is half.
    assert load_gpu("A100").dense_tflops["bf16"] == 312
    assert load_gpu("H100").dense_tflops["bf16"] == pytest.approx(989.5)
    assert load_gpu("H100").dense_tflops["fp8"] == pytest.approx(1979)
    assert "fp8" not in load_gpu("A100").dense_tflops  # Ampere has no FP8


def test_aliases_and_nvml_names():
    assert load_gpu("A100").gpu_id == "A100-SXM4-80GB"
    assert load_gpu("h100").gpu_id == "H100-SXM5-80GB"
    assert load_gpu("NVIDIA H100 80GB HBM3").gpu_id == "H100-SXM5-80GB"
    assert load_gpu("NVIDIA A100-SXM4-40GB").gpu_id == "A100-SXM4-40GB"


def test_unknown_gpu_names_field_and_allowed():
    with pytest.raises(InputError) as e:
        load_gpu("V100")
    assert e.value.field == "gpu" and "A100-SXM4-80GB" in str(e.value)


def test_dgx_servers():
    a = load_server("DGX-A100-640GB")
    assert a.gpus_per_node == 8 and a.gpu_id == "A100-SXM4-80GB" and a.host_idle_w > 0
    h = load_server("DGX-H100")
    assert h.cpus_per_node == 2 and "8480C" in h.cpu_model
    assert load_catalog().server_for_gpu("H100-SXM5-80GB").server_id == "DGX-H100"


def test_user_toml_overrides_and_adds(tmp_path):
    f = tmp_path / "hw.toml"
    f.write_text('[gpu."H100-SXM5-80GB"]\nidle_w = 71.5\nidle_w_source = "our nvidia-smi"\n'
                 '[gpu."MY-GPU"]\nname = "Mine"\narchitecture = "X"\ndense_tflops = { bf16 = 100.0 }\nmemory_gb = 16.0\n'
                 'mem_bandwidth_gb_s = 500.0\nnvlink_gb_s = 0.0\npcie_gb_s = 64.0\ntdp_w = 200.0\nidle_w = 20.0\n'
                 'die_area_mm2 = 300.0\nprocess_node = "TSMC N7"\n')
    h = load_gpu("H100", extra=str(f))
    assert h.idle_w == 71.5 and h.tdp_w == 700  # overridden field, the rest kept
    assert load_gpu("MY-GPU", extra=str(f)).dense_tflops["bf16"] == 100.0
    assert load_gpu("H100").idle_w != 71.5  # the bundled catalog is untouched


def test_user_toml_missing_field_is_named(tmp_path):
    f = tmp_path / "hw.toml"
    f.write_text('[gpu."BAD"]\nname = "x"\n')
    with pytest.raises(InputError) as e:
        load_gpu("BAD", extra=str(f))
    assert e.value.field.startswith("gpu.BAD.")


def test_interconnect_is_unidirectional():
    assert load_gpu("H100").interconnect_bytes_s == 450e9
    assert load_gpu("L40S").interconnect_bytes_s == 32e9  # no NVLink: PCIe Gen4 x16
