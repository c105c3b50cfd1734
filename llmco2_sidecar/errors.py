"""Errors that cross module boundaries.

``InputError`` names the offending field and what is allowed; the CLI prints it as one line and
exits with status 2, the gRPC service maps it to ``INVALID_ARGUMENT``.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: ``field`` is the name of the offending field, ``allowed`` what would be valid."""

    def __init__(self, field: str, message: str, allowed: str | None = None):
        self.field = field
        self.allowed = allowed
        text = f"{field}: {message}"
        if allowed:
            text += f" (allowed: {allowed})"
        super().__init__(text)


class UnsupportedModelError(InputError):
    """A model architecture we cannot model correctly yet (for example mixture-of-experts)."""
