"""PABEE for regression: exit once the output has changed by at most tau for `patience` consecutive exits.

Score at exit k = the largest |change| between consecutive exits over the last
``patience`` steps (inf until that many changes exist), so threshold tau at exit
k means "the last `patience` changes were all <= tau" -- PABEE's regression rule,
with tau calibrated per exit instead of fixed. Only for one-output (regression) models.
"""

import torch

from ..tasks import REGRESSION
from .base import CRITERIA, Criterion


@CRITERIA.register("patience-regression")
class PatienceRegression(Criterion):
    tasks = (REGRESSION,)

    def __init__(self, patience: int = 1):
        super().__init__()
        if int(patience) < 1:
            raise TypeError("patience must be >= 1")
        self.patience = int(patience)

    def params(self):
        return {"patience": self.patience}

    def init_state(self, batch, device=None):
        inf = torch.full((batch,), float("inf"), device=device)
        return {"prev": torch.full((batch,), float("nan"), device=device),
                **{f"d{i}": inf.clone() for i in range(self.patience)}}

    def step(self, logits, state):
        value = logits[:, 0].float()
        change = (value - state["prev"]).abs()
        change = torch.where(torch.isnan(change), torch.full_like(change, float("inf")), change)
        # the last `patience` changes, newest first
        window = [change] + [state[f"d{i}"] for i in range(self.patience - 1)]
        score = torch.stack(window, 1).amax(1)
        return score, {"prev": value, **{f"d{i}": w for i, w in enumerate(window)}}
