"""Exit criteria, registered by name. Add one: a module here with a decorated Criterion subclass."""

from .base import CRITERIA, FITTED_KEY, Criterion, build_criterion, feature_reduction, fitted_record

from . import cobee, dge, entropy, learned, maxprob, patience, pcee  # noqa: E402,F401  (registers)
from . import patience_regression  # noqa: E402,F401  (registers)

__all__ = ["CRITERIA", "FITTED_KEY", "Criterion", "build_criterion", "feature_reduction", "fitted_record"]
