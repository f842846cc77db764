"""Exit criteria, registered by name. Add one: a module here with a decorated Criterion subclass."""

from .base import CRITERIA, Criterion, build_criterion

from . import cobee, dge, entropy, learned, maxprob, patience, pcee  # noqa: E402,F401  (registers)
from . import label_margin, patience_regression  # noqa: E402,F401  (registers)

__all__ = ["CRITERIA", "Criterion", "build_criterion"]
