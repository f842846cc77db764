"""Exit heads, registered by name. Add one: a module here with a decorated ExitHead subclass."""

from .base import EXITS, ExitHead, ExitSet, ExitSpec, Tokens, reduce

from ..core.registry import discover

discover(__name__)  # every module here registers its heads; no import list to keep

__all__ = ["EXITS", "ExitHead", "ExitSet", "ExitSpec", "Tokens", "reduce"]
