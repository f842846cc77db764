"""DeeBERT: exit when the prediction entropy is low (FastBERT divides it by log C)."""

import math

import torch

from .base import CRITERIA, Criterion


def entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), -1)
    return -(logp.exp() * logp).sum(-1)


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
