"""GPU and server specifications (dataclasses; units in field names)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Data types a GPU spec may list peak dense throughput for, and their bit widths.
DTYPE_BITS = {"fp32": 32, "tf32": 32, "bf16": 16, "fp16": 16, "fp8": 8, "int8": 8, "fp4": 4, "int4": 4}


@dataclass(frozen=True)
class GPUSpec:
    """One GPU model. All tensor throughputs are **dense** (no 2:4 sparsity).

    Attributes:
        gpu_id: catalog key, e.g. ``"H100-SXM5-80GB"``.
        name: marketing name.
        dense_tflops: peak dense throughput per data type, in TFLOP/s (TOP/s for int8).
        memory_gb: HBM/GDDR capacity in decimal GB.
        mem_bandwidth_gb_s: memory bandwidth in GB/s.
        nvlink_gb_s: total bidirectional NVLink bandwidth per GPU in GB/s (0 if none).
        pcie_gb_s: PCIe x16 bidirectional bandwidth in GB/s.
        tdp_w: maximum board power in W.
        idle_w: bare idle power in W, no CUDA context (measured or assumed, see ``sources['idle_w']``).
        idle_ctx_w: idle power with a CUDA context (a loaded serving engine), in W; 0 = derive it
            from ``idle_w`` (``predictor.physics.loaded_idle_w``; see ``sources['idle_ctx_w']``).
        die_area_mm2, process_node: for embodied carbon.
        sources: figure name -> where it comes from.
    """

    gpu_id: str
    name: str
    architecture: str
    dense_tflops: dict[str, float]
    memory_gb: float
    mem_bandwidth_gb_s: float
    nvlink_gb_s: float
    pcie_gb_s: float
    tdp_w: float
    idle_w: float
    die_area_mm2: float
    process_node: str
    sm_count: int = 0
    l2_cache_mb: float = 0.0
    flags: str = ""
    idle_ctx_w: float = 0.0
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def peak_flops(self, dtype: str = "bf16") -> float:
        """Peak dense throughput in FLOP/s for ``dtype`` (falls back to bf16/fp16)."""
        for key in (dtype, "bf16", "fp16"):
            if key in self.dense_tflops and self.dense_tflops[key] > 0:
                return self.dense_tflops[key] * 1e12
        raise KeyError(f"{self.gpu_id} lists no throughput for {dtype}")

    @property
    def mem_bandwidth_bytes_s(self) -> float:
        return self.mem_bandwidth_gb_s * 1e9

    @property
    def interconnect_bytes_s(self) -> float:
        """Unidirectional GPU-to-GPU bandwidth in bytes/s: NVLink if present, else PCIe."""
        bidir = self.nvlink_gb_s if self.nvlink_gb_s > 0 else self.pcie_gb_s
        return bidir / 2 * 1e9

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    def dtype_for_bits(self, bits: int) -> str:
        """Tensor data type used for a given weight/activation bit width."""
        return {32: "tf32", 16: "bf16", 8: "fp8" if "fp8" in self.dense_tflops else "int8", 4: "int4"}.get(bits, "bf16")


@dataclass(frozen=True)
class ServerSpec:
    """A multi-GPU node (e.g. DGX A100)."""

    server_id: str
    name: str
    gpu_id: str
    gpus_per_node: int
    cpu_model: str
    cpus_per_node: int
    cpu_cores_total: int
    system_memory_tb: float
    system_max_power_w: float
    host_idle_w: float
    sources: dict[str, str] = field(default_factory=dict, compare=False)
