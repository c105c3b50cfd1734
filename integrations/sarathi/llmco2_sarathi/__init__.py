"""llmco2 adapter for Sarathi-Serve: its scheduler outputs to the llmco2 sidecar (see :mod:`.hook`)."""

from .hook import SarathiCarbonHook, attach

__all__ = ["SarathiCarbonHook", "attach"]
