"""Training objectives for the exits, registered by name."""

from .base import OBJECTIVES, Objective, TrainBatch, build_objective

from . import ce_distil, distil, joint, leebert  # noqa: E402,F401  (registers)
from . import bce_distil, mse_distil  # noqa: E402,F401  (registers)

__all__ = ["OBJECTIVES", "Objective", "TrainBatch", "build_objective"]
