"""Engine-side client of the sidecar: the non-blocking step emitter and a small query client."""

from .emitter import Emitter, EmitterConfig, EmitterStats, EngineInfo, Phase
from .query import AsyncCarbonQuery, CarbonQuery, RequestCarbon

__all__ = ["AsyncCarbonQuery", "CarbonQuery", "Emitter", "EmitterConfig", "EmitterStats", "EngineInfo", "Phase",
           "RequestCarbon"]
