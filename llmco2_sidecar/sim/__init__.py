"""A Sarathi-style scheduler simulator fed by the Azure conversation trace, and the adapter a real
Sarathi-style engine calls to send its steps to the sidecar."""

from .adapter import SarathiAdapter, ScheduledSeq
from .scheduler import SchedulerConfig, SarathiSimulator, SimStats
from .trace import TraceRequest, load_azure_conv

__all__ = ["SarathiAdapter", "ScheduledSeq", "SchedulerConfig", "SarathiSimulator", "SimStats",
           "TraceRequest", "load_azure_conv"]
