"""LECO comparison-based exiting (CoBEE): exit once enough exits so far voted for this exit's class.

Every exit votes for its argmax; votes accumulate over all exits so far (not
only consecutive ones, unlike ``patience``). Score = -(votes for exit k's
class, exit k included), so threshold -t means "t exits agree". With
``weighted=true`` each vote counts the voting exit's top probability, so
confident exits weigh more and the score is continuous (finer speedup steps).
With per-exit thresholds, a count and a fraction of exits are the same rule.
For the unweighted count, ``tiebreak=true`` adds the exit's normalised
entropy as for ``patience`` (whole-number thresholds keep their meaning);
calibration tries both unless you set it.
"""

import torch

from .base import CRITERIA, Criterion
from .entropy import tiebreak


@CRITERIA.register("cobee")
class Cobee(Criterion):
    grid = {"tiebreak": [False, True]}

    def __init__(self, weighted: bool = False, tiebreak: bool = False):
        self.weighted = bool(weighted)
        self.tiebreak = bool(tiebreak) and not self.weighted  # weighted votes are continuous already

    @property
    def integer(self):  # whole-number votes unless weighted or tie-broken
        return not (self.weighted or self.tiebreak)

    def params(self):
        return {"weighted": self.weighted, "tiebreak": self.tiebreak}

    def init_state(self, batch, device=None):
        return {"votes": torch.zeros(batch, 0, device=device)}

    def step(self, logits, state):
        probs = torch.softmax(logits.float(), -1)
        top, pred = probs.max(-1)
        votes = state["votes"]
        if votes.shape[1] == 0:
            votes = torch.zeros_like(probs)
        weight = top if self.weighted else torch.ones_like(top)
        votes = votes.scatter_add(1, pred[:, None], weight[:, None])
        score = -votes.gather(1, pred[:, None]).squeeze(1)
        if self.tiebreak:
            score = score - 1 + tiebreak(logits)
        return score, {"votes": votes}
