"""Exit heads, registered by name. Add one: a module here with a decorated ExitHead subclass."""

from .base import EXITS, ExitHead, ExitSet, ExitSpec, Tokens, reduce

from . import bypass, leco, linear, mean_mlp, pooler_mlp, tokens  # noqa: E402,F401  (registers)

__all__ = ["EXITS", "ExitHead", "ExitSet", "ExitSpec", "Tokens", "reduce"]
