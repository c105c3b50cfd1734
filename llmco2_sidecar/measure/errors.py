"""Typed meter errors. ``MeterUnavailable`` (and subclasses) mean "this meter cannot run on this
machine" (callers fall back to a null figure with the reason); ``MeterReadError`` means a meter that
was working failed to read (callers skip that sample and keep going)."""

from __future__ import annotations


class MeterError(RuntimeError):
    """Base class of every meter error; ``meter`` names the meter ("nvml", "rapl")."""

    meter: str = "meter"

    def __init__(self, message: str):
        super().__init__(message)
        self.reason = message


class MeterUnavailable(MeterError):
    """The meter cannot be opened here (no library, no driver, no device, no permission)."""


class MeterReadError(MeterError):
    """A reading failed after the meter was opened."""


class NVMLUnavailable(MeterUnavailable):
    """NVML cannot be initialised: nvidia-ml-py missing, library or driver not found, no GPU."""

    meter = "nvml"


class NVMLPermissionError(NVMLUnavailable):
    """NVML refused access (NVML_ERROR_NO_PERMISSION)."""


class NVMLReadError(MeterReadError):
    """An NVML call failed on an opened meter (GPU lost, timeout, unknown error)."""

    meter = "nvml"


class RAPLUnavailable(MeterUnavailable):
    """No readable powercap RAPL zone under the root."""

    meter = "rapl"


class RAPLPermissionError(RAPLUnavailable):
    """``energy_uj`` exists but is not readable (root-only since CVE-2020-8694)."""


class RAPLReadError(MeterReadError):
    """A powercap file could not be read or parsed after the meter was opened."""

    meter = "rapl"
