"""The help formatter of the commands that show their defaults: argparse's, without "(default:
None)" after the options that have no default (required ones, or computed when left out)."""

from __future__ import annotations

import argparse


class DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or action.default is False:
            return action.help or ""
        return super()._get_help_string(action)
