"""Backbone adapters, registered by family name; see ``base.py`` for the interface."""

from __future__ import annotations

from ..errors import EebertError
from ..registry import Registry
from .base import BackboneAdapter, Dims, dims_from_config

BACKBONES: Registry[type[BackboneAdapter]] = Registry("backbone")

from ..registry import discover  # noqa: E402

discover(__name__)  # every module here registers its adapter; no import list to keep


def adapter_for(model) -> BackboneAdapter:
    """Pick the adapter for a loaded model by its ``config.model_type``."""
    return adapter_class(getattr(model.config, "model_type", None))(model)


def adapter_class(model_type: str | None) -> type[BackboneAdapter]:
    """The adapter class for a ``config.model_type`` (``eebert validate`` asks without loading a model)."""
    for name in BACKBONES.names():
        cls = BACKBONES.get(name)
        if model_type in cls.model_types:
            return cls
    supported = sorted(t for n in BACKBONES.names() for t in BACKBONES.get(n).model_types)
    raise EebertError(f"unsupported architecture {model_type!r}; eebert supports: {', '.join(supported)}",
                      "adding a family is one adapter module, see docs/backbones.md")


__all__ = ["BACKBONES", "BackboneAdapter", "Dims", "adapter_class", "adapter_for", "dims_from_config"]
