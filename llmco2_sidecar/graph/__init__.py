"""The LLMCO2 kernel graph (paper section 4.1): per-layer DAG of kernels with operations, memory
bytes, network bytes and Roofline figures, for prefill, decode and mixed engine steps."""

from .aggregates import aggregates
from .builder import GLOBAL_FEATURE_NAMES, NODE_FEATURE_NAMES, LayerGraph, StepFeatures, layer_graph, roofline, step_features
from .kernels import AGGREGATES, KERNEL_TYPES, Kernel, layer_kernels, outside_kernels
from .shares import request_shares
from .table import KernelRow, kernel_table, ridge_points

__all__ = [
    "AGGREGATES", "GLOBAL_FEATURE_NAMES", "KERNEL_TYPES", "NODE_FEATURE_NAMES", "Kernel", "KernelRow", "LayerGraph",
    "StepFeatures", "aggregates", "kernel_table", "layer_graph", "layer_kernels", "outside_kernels", "request_shares",
    "ridge_points", "roofline", "step_features",
]
