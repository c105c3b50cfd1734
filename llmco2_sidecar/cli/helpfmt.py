"""The help formatter of the commands that show their defaults: argparse's, without "(default:
None)" after the options that have no default (required ones, or computed when left out)."""

from __future__ import annotations

import argparse


def default_region() -> str:
    """The bundled table's default region as help text says it, e.g. ``world: 481 gCO2e/kWh, ember-2023``."""
    from ..energy import carbon

    r = carbon.region(None)
    return f"{r.code}: {r.g_per_kwh:g} gCO2e/kWh, {r.source}"


def default_pue() -> str:
    """The default PUE and its source, as help text says it."""
    from ..energy import carbon

    return carbon.PUE_SOURCE


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)
