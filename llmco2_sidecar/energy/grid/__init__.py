"""Grid carbon intensity as a source: a static table region, an hourly CSV series, or a live API
(Electricity Maps, WattTime, the UK Carbon Intensity API) polled in the background."""

from .series import IntensityReading, IntensitySeries

__all__ = ["IntensityReading", "IntensitySeries"]
