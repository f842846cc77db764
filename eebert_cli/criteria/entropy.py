"""DeeBERT: exit when the prediction entropy is low; normalized=true divides it by log C (FastBERT).

Score = H(p) = -sum_c p_c log p_c of the exit's softmax, in nats: raw entropy
lies in [0, log C], so a threshold means different things for 2 and 20
classes. ``normalized=true`` divides by log C, giving [0, 1] for any number of
classes (FastBERT's "uncertainty"); calibration picks the thresholds either way,
so the choice only matters for thresholds you read or set by hand.
"""

import math

import torch

from .base import CRITERIA, Criterion, as_float


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(as_float(logits), -1)
    return -(logp.exp() * logp).sum(-1)


def tiebreak(logits: torch.Tensor) -> torch.Tensor:
    """Normalised entropy u in (0, 1]: a confidence tie-break for whole-number scores. A count criterion
    with ``tiebreak=true`` scores -(count) - 1 + u: whole-number thresholds mean exactly what they meant,
    and a threshold between -(t+1) and -t lets samples whose count is t leave only when confident enough,
    which turns coarse speedup steps into a continuum. Calibration tries both unless told."""
    return (entropy(logits) / math.log(logits.shape[-1])).clamp(1e-6, 1.0)


@CRITERIA.register("entropy")
class Entropy(Criterion):
    def __init__(self, normalized: bool = False):
        self.normalized = normalized

    def params(self):
        return {"normalized": self.normalized}

    def step(self, logits, state):
        h = entropy(logits)
        if self.normalized:
            h = h / math.log(logits.shape[-1])
        return h, state
