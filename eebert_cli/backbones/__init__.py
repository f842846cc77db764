"""Backbone adapters, registered by family name; see ``base.py`` for the interface."""

from __future__ import annotations

from ..core.errors import EebertError
from ..core.registry import Registry
from .base import BackboneAdapter, Dims, dims_from_config

BACKBONES: Registry[type[BackboneAdapter]] = Registry("backbone")

from ..core.registry import discover  # noqa: E402

discover(__name__)  # every module here registers its adapter; no import list to keep


def adapter_for(model) -> BackboneAdapter:
    """Pick the adapter for a loaded model by its ``config.model_type``."""
    return adapter_class(getattr(model.config, "model_type", None))(model)


def adapter_class(model_type: str | None) -> type[BackboneAdapter]:
    """The adapter class for a ``config.model_type`` (``eebert validate`` asks without loading a model)."""
    cls = family_of(model_type)
    if cls is not None:
        return cls
    supported = sorted(t for n in BACKBONES.names() for t in BACKBONES.get(n).model_types)
    raise EebertError(f"unsupported architecture {model_type!r}; eebert supports: {', '.join(supported)}",
                      "adding a family is one adapter module, see docs/backbones.md")


def family_of(model_type: str | None) -> type[BackboneAdapter] | None:
    """The adapter class registered for ``model_type`` (None when no family claims it)."""
    return next((BACKBONES.get(n) for n in BACKBONES.names() if model_type in BACKBONES.get(n).model_types), None)


def max_tokens(config) -> int | None:
    """Longest input the checkpoint's position embeddings allow (None when it does not say);
    ``config``: a transformers config or the raw config.json dict."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    n = get("max_position_embeddings")
    if not isinstance(n, int) or n <= 0:
        return None
    family = family_of(get("model_type"))
    if family is not None and family.offset_positions:
        n -= (get("pad_token_id") or 0) + 1
    return n


#: tokens kept per example when max_length is not given (capped by the checkpoint's positions)
DEFAULT_MAX_LENGTH = 128


def check_max_length(max_length: int | None, config, where: str = "--max-length") -> int:
    """``max_length`` within 2..what the checkpoint's positions allow; None = the default, capped there."""
    top = max_tokens(config) if config is not None else None
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH, top or DEFAULT_MAX_LENGTH)
    if max_length < 2 or (top is not None and max_length > top):
        raise EebertError(f"{where} must be within 2..{top if top else 'the model maximum'}, got {max_length}",
                          f"this checkpoint has positions for {top} tokens" if top else "every input needs [CLS] and [SEP]")
    return max_length


__all__ = ["BACKBONES", "BackboneAdapter", "Dims", "adapter_class", "adapter_for", "check_max_length", "dims_from_config",
           "family_of", "max_tokens"]
