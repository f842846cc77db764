"""Exit criteria, registered by name. Add one: a module here with a decorated Criterion subclass."""

from .base import CRITERIA, FITTED_KEY, Criterion, build_criterion, feature_reduction, fitted_record

from ..core.registry import discover

discover(__name__)  # every module here registers its criteria; no import list to keep

__all__ = ["CRITERIA", "FITTED_KEY", "Criterion", "build_criterion", "feature_reduction", "fitted_record"]
