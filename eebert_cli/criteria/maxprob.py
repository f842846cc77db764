"""Exit when the top class probability is high (score = 1 - max p)."""

import torch

from .base import CRITERIA, Criterion, as_float


@CRITERIA.register("maxprob")
class MaxProb(Criterion):
    def step(self, logits, state):
        return 1.0 - torch.softmax(as_float(logits), -1).amax(-1), state
