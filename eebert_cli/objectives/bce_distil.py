"""Multi-label: binary cross-entropy on the target label sets plus on the deployed model's probabilities, per exit."""

import torch
import torch.nn.functional as F

from ..tasks import MULTI_LABEL
from .base import OBJECTIVES, Objective


@OBJECTIVES.register("bce-distil")
class BceDistil(Objective):
    tasks = (MULTI_LABEL,)

    def __init__(self, alpha: float = 0.5):
        """``alpha`` weighs matching the deployed model's per-label probabilities against the targets (0 = targets only)."""
        super().__init__()
        self.alpha = alpha

    def forward(self, exit_logits, batch):
        target = batch.targets.to(exit_logits[0].dtype)
        teacher = torch.sigmoid(batch.teacher.to(exit_logits[0].dtype))
        total = 0.0
        for logits in exit_logits:
            total = total + (1 - self.alpha) * F.binary_cross_entropy_with_logits(logits, target) \
                + self.alpha * F.binary_cross_entropy_with_logits(logits, teacher)
        return total / len(exit_logits)
