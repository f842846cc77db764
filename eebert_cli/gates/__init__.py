"""Layer-skipping gates (SmartBERT): a gate before a layer decides, per example, to skip it.

``config.py`` holds the knobs (shape and training), ``smartbert.py`` the gate
module, ``train.py`` the loop that fits gates with the backbone in it. A new
kind of gate is one module here registered in :data:`GATES`.

Only ``GateConfig`` loads with the package: the rest (torch, and every gate module registering
itself) loads on first use, so the CLI parses ``--gate-*`` flags without torch.
"""

from .config import GateConfig

_LAZY = ("GATES", "SkipGates", "build_gates", "gated_layer")


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import base
    from ..core.registry import discover

    discover(__name__)  # every module here registers its gates
    globals().update({n: getattr(base, n) for n in _LAZY})  # later lookups skip this function
    return globals()[name]


__all__ = ["GATES", "GateConfig", "SkipGates", "build_gates", "gated_layer"]
