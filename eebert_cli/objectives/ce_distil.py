"""Cross-entropy on the targets plus distillation from the deployed model's logits, per exit."""

import torch.nn.functional as F

from ..tasks import CLASSIFICATION, TOKEN_CLASSIFICATION
from .base import OBJECTIVES, Objective


def kd_loss(student, teacher, temperature: float):
    t = temperature
    return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1),
                    log_target=True, reduction="batchmean") * t * t


@OBJECTIVES.register("ce-distil")
class CeDistil(Objective):
    tasks = (CLASSIFICATION, TOKEN_CLASSIFICATION)  # a tagger's exits train on one row per word

    def __init__(self, alpha: float = 0.5, temperature: float = 2.0):
        """``alpha`` weighs distillation against cross-entropy (0 = CE only, 1 = KD only)."""
        super().__init__()
        self.alpha, self.temperature = alpha, temperature

    def forward(self, exit_logits, batch):
        total = 0.0
        for logits in exit_logits:
            ce = F.cross_entropy(logits, batch.targets)
            kd = kd_loss(logits, batch.teacher, self.temperature)
            total = total + (1 - self.alpha) * ce + self.alpha * kd
        return total / len(exit_logits)
