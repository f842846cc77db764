"""FastBERT self-distillation: every exit matches the deployed model's distribution (KL, temperature T).

No labels are used: the deployed model (the "teacher", FastBERT's final
layer) is the only target, so this objective also suits unlabeled data.
"""

from .base import OBJECTIVES, Objective
from .ce_distil import kd_loss


@OBJECTIVES.register("distil")
class Distil(Objective):
    def __init__(self, temperature: float = 2.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, exit_logits, batch):
        return sum(kd_loss(l, batch.teacher, self.temperature) for l in exit_logits) / len(exit_logits)
