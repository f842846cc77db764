"""PABEE: exit once the argmax has stayed the same for `patience` consecutive exits.

Score = -(run length of agreeing consecutive exits), so threshold -t means patience t;
``tiebreak=true`` adds the exit's confidence (``entropy.tiebreak`` says how).
"""

import torch

from .base import CRITERIA, Criterion
from .entropy import tiebreak


@CRITERIA.register("patience")
class Patience(Criterion):
    grid = {"tiebreak": [False, True]}

    def __init__(self, tiebreak: bool = False):
        self.tiebreak = bool(tiebreak)

    @property
    def integer(self):  # whole-number scores unless tie-broken by confidence
        return not self.tiebreak

    def params(self):
        return {"tiebreak": self.tiebreak}

    def init_state(self, batch, device=None):
        return {"prev": torch.full((batch,), -1, dtype=torch.long, device=device),
                "run": torch.zeros(batch, device=device)}

    def step(self, logits, state):
        pred = logits.argmax(-1)
        run = torch.where(pred == state["prev"], state["run"] + 1, torch.zeros_like(state["run"]))
        score = -run - 1 + tiebreak(logits) if self.tiebreak else -run
        return score, {"prev": pred, "run": run}
