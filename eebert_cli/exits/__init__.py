"""Exit heads, registered by name. Add one: a module here with a decorated ExitHead subclass."""

from .base import EXITS, ExitHead, ExitSet, ExitSpec, reduce

from . import linear, mean_mlp, pooler_mlp  # noqa: E402,F401  (registers)

__all__ = ["EXITS", "ExitHead", "ExitSet", "ExitSpec", "reduce"]
