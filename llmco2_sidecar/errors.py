"""Errors that cross module boundaries.

``InputError`` names the offending field and what is allowed; the CLI prints it as one line and
exits with status 2, the gRPC service maps it to ``INVALID_ARGUMENT``.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input: ``field`` is the name of the offending field, ``allowed`` what would be valid."""

    def __init__(self, field: str, message: str, allowed: str | None = None):
        self.field = field
        self.message = message
        self.allowed = allowed
        text = f"{field}: {message}"
        if allowed:
            allowed = _unique_items(allowed)
            self.allowed = allowed
            text += f" (allowed: {allowed})"
        super().__init__(text)


class UnsupportedModelError(InputError):
    """A model architecture we cannot model correctly yet (for example mixture-of-experts)."""


def _unique_items(allowed: str) -> str:
    """A comma-separated list of what is allowed, each item once (first occurrence kept, order kept)."""
    items = allowed.split(", ")
    if len(items) < 2:
        return allowed
    seen: set[str] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return ", ".join(out)
