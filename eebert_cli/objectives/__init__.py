"""Training objectives for the exits, registered by name."""

from .base import OBJECTIVES, Objective, TrainBatch, build_objective

from ..core.registry import discover

discover(__name__)  # every module here registers its objectives; no import list to keep

__all__ = ["OBJECTIVES", "Objective", "TrainBatch", "build_objective"]
