"""Models: find or build the base checkpoint, load it, and put adapters on it."""

from tunesmith.models.adapters import ADAPTERS, apply_adapter, load_adapter, register_adapter
from tunesmith.models.load import LoadedModel, load_base_model
from tunesmith.models.precision import choose_precision
from tunesmith.models.resolve import EMBEDDED_MODELS, resolve_base

__all__ = ["ADAPTERS", "EMBEDDED_MODELS", "LoadedModel", "apply_adapter", "choose_precision",
           "load_adapter", "load_base_model", "register_adapter", "resolve_base"]
