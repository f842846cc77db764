"""Regression exits: MSE to the targets plus MSE to the deployed model's output, per exit."""

import torch.nn.functional as F

from ..tasks import REGRESSION
from .base import OBJECTIVES, Objective


@OBJECTIVES.register("mse-distil")
class MseDistil(Objective):
    tasks = (REGRESSION,)

    def __init__(self, alpha: float = 0.5):
        """``alpha`` weighs matching the deployed output against matching the targets (0 = targets only)."""
        super().__init__()
        self.alpha = alpha

    def forward(self, exit_logits, batch):
        target = batch.targets.to(exit_logits[0].dtype).reshape(-1)
        teacher = batch.teacher[:, 0]
        total = 0.0
        for out in exit_logits:
            y = out[:, 0]
            total = total + (1 - self.alpha) * F.mse_loss(y, target) + self.alpha * F.mse_loss(y, teacher)
        return total / len(exit_logits)
