"""GPU and server specifications: the bundled catalog and user overrides."""

from .catalog import Catalog, list_gpus, load_catalog, load_gpu, load_server
from .spec import GPUSpec, ServerSpec

__all__ = ["Catalog", "GPUSpec", "ServerSpec", "list_gpus", "load_catalog", "load_gpu", "load_server"]
