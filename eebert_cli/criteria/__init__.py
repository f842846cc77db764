"""Exit criteria, registered by name. Add one: a module here with a decorated Criterion subclass."""

from .base import CRITERIA, Criterion, build_criterion

from ..registry import discover

discover(__name__)  # every module here registers its criteria; no import list to keep

__all__ = ["CRITERIA", "Criterion", "build_criterion"]
