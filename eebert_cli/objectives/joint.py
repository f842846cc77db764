"""Joint training: the sum of per-exit cross-entropies (DeeBERT), optionally PABEE's weighting.

``weighting="pabee"`` weighs the exit after layer i by i (deeper exits count
more), normalised so the weights sum to one; ``"uniform"`` weighs all alike.
"""

import torch.nn.functional as F

from .base import OBJECTIVES, Objective


@OBJECTIVES.register("joint")
class Joint(Objective):
    def __init__(self, weighting: str = "uniform"):
        super().__init__()
        if weighting not in ("uniform", "pabee"):
            raise TypeError(f"weighting must be 'uniform' or 'pabee', got {weighting!r}")
        self.weighting = weighting
        self.layers: list[int] | None = None

    def bind(self, exits):
        self.layers = list(exits.layers)

    def weights(self, k: int) -> list[float]:
        if self.weighting == "uniform":
            w = [1.0] * k
        else:
            w = [float(l) for l in (self.layers or range(1, k + 1))]
        total = sum(w)
        return [x / total for x in w]

    def forward(self, exit_logits, batch):
        w = self.weights(len(exit_logits))
        return sum(wi * F.cross_entropy(l, batch.targets) for wi, l in zip(w, exit_logits))

    def report(self):
        return {"weighting": self.weighting, "weights": self.weights(len(self.layers or [])) if self.layers else None}
