"""LLM architectures: :class:`ModelSpec` from Hugging Face ``config.json`` and the bundled catalog."""

from .catalog import bundled_status, list_aliases, list_models, load_model
from .spec import ModelSpec

__all__ = ["ModelSpec", "bundled_status", "list_aliases", "list_models", "load_model"]
