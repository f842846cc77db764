"""PCEE-BERT: exit once `patience` consecutive exits were confident (normalised entropy < confidence).

Score = -(run length of consecutive exits, this one included, whose entropy
divided by log C is below ``confidence``), so threshold -t means patience t, as
for ``patience``. An unconfident exit resets the run. Thresholds are whole
numbers; calibration tries a small grid of ``confidence`` values unless you set
one, and per-exit thresholds give finer speedup steps than one global patience.
"""

import math

import torch

from .base import CRITERIA, Criterion
from .entropy import entropy


@CRITERIA.register("pcee")
class Pcee(Criterion):
    integer = True
    grid = {"confidence": [0.1, 0.2, 0.3, 0.4, 0.5]}

    def __init__(self, confidence: float = 0.3):
        if not 0.0 < float(confidence) <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {confidence}")
        self.confidence = float(confidence)

    def params(self):
        return {"confidence": self.confidence}

    def init_state(self, batch, device=None):
        return {"run": torch.zeros(batch, device=device)}

    def step(self, logits, state):
        sure = entropy(logits) / math.log(logits.shape[-1]) < self.confidence
        run = torch.where(sure, state["run"] + 1, torch.zeros_like(state["run"]))
        return -run, {"run": run}
