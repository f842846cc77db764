"""Multi-label: exit when every label's decision is confident (score = 1 - min over labels of |2p - 1|).

p = sigmoid(logit) per label; |2p - 1| is 0 at p = 0.5 (undecided) and 1 at p = 0 or 1.
The least decided label sets the score, so a sample leaves only when all its labels are
settled. Only for multi-label models (problem_type "multi_label_classification").
"""

import torch

from ..tasks import MULTI_LABEL
from .base import CRITERIA, Criterion, as_float


@CRITERIA.register("label-margin")
class LabelMargin(Criterion):
    tasks = (MULTI_LABEL,)

    def step(self, logits, state):
        margin = (2 * torch.sigmoid(as_float(logits)) - 1).abs()
        return 1.0 - margin.amin(-1), state
