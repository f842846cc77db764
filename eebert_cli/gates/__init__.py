"""Layer-skipping gates (SmartBERT): a gate before a layer decides, per example, to skip it.

``config.py`` holds the knobs (shape and training), ``smartbert.py`` the gate
module, ``train.py`` the loop that fits gates with the backbone in it. A new
kind of gate is one module here registered in :data:`GATES`.
"""

from .base import GATES, SkipGates, build_gates, gated_layer
from .config import GateConfig
from ..core.registry import discover

discover(__name__)  # every module here registers its gates

__all__ = ["GATES", "GateConfig", "SkipGates", "build_gates", "gated_layer"]
