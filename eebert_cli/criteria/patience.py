"""PABEE: exit once the argmax has stayed the same for `patience` consecutive exits.

Score = -(run length of agreeing consecutive exits), so threshold -t means patience t.
"""

import torch

from .base import CRITERIA, Criterion


@CRITERIA.register("patience")
class Patience(Criterion):
    integer = True

    def init_state(self, batch, device=None):
        return {"prev": torch.full((batch,), -1, dtype=torch.long, device=device),
                "run": torch.zeros(batch, device=device)}

    def step(self, logits, state):
        pred = logits.argmax(-1)
        run = torch.where(pred == state["prev"], state["run"] + 1, torch.zeros_like(state["run"]))
        return -run, {"prev": pred, "run": run}
