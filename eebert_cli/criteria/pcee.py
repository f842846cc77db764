"""PCEE-BERT: exit once `patience` consecutive exits were confident (normalised entropy < confidence).

Score = -(run length of consecutive exits, this one included, whose entropy
divided by log C is below ``confidence``), so threshold -t means patience t, as
for ``patience``. An unconfident exit resets the run. Thresholds are whole
numbers; calibration tries a small grid of ``confidence`` values unless you set
one, and per-exit thresholds give finer speedup steps than one global patience.
``tiebreak=true`` adds the exit's confidence (``entropy.tiebreak`` says how).
"""

import math

import torch

from ..core.registry import Range
from .base import CRITERIA, Criterion
from .entropy import entropy, tiebreak


@CRITERIA.register("pcee")
class Pcee(Criterion):
    grid = {"confidence": [0.1, 0.2, 0.3, 0.4, 0.5], "tiebreak": [False, True]}
    bounds = {"confidence": Range(0.0, 1.0, lo_open=True)}

    def __init__(self, confidence: float = 0.3, tiebreak: bool = False):
        if not 0.0 < float(confidence) <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {confidence}")
        self.confidence = float(confidence)
        self.tiebreak = bool(tiebreak)

    @property
    def integer(self):
        return not self.tiebreak

    def params(self):
        return {"confidence": self.confidence, "tiebreak": self.tiebreak}

    def init_state(self, batch, device=None):
        return {"run": torch.zeros(batch, device=device)}

    def step(self, logits, state):
        sure = entropy(logits) / math.log(logits.shape[-1]) < self.confidence
        run = torch.where(sure, state["run"] + 1, torch.zeros_like(state["run"]))
        score = -run - 1 + tiebreak(logits) if self.tiebreak else -run
        return score, {"run": run}
