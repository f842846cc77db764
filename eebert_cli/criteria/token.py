"""Per-token exit for taggers (TOKEE-like): each word halts on its own, at the first exit where it
is confident enough, and stops being updated (``model/token_halt.py`` runs the pass).

Registered like the per-sentence criteria, so it is chosen by name: ``eebert calibrate ART
--criterion token-maxprob`` picks its threshold by running the per-token pass on validation
(``scoring/token_calibrate.py``), since halted words change what the running ones attend to and no
cached-state simulation holds. A new per-token rule is another class here with its own ``halts``.
"""

from __future__ import annotations

import torch

from ..tasks import TOKEN_CLASSIFICATION
from .base import CRITERIA, Criterion


@CRITERIA.register("token-maxprob")
class TokenMaxProb(Criterion):
    """A word halts when its top tag probability reaches the threshold ``p`` (the threshold is that
    probability, as ``--token-threshold`` gives it)."""

    tasks = (TOKEN_CLASSIFICATION,)
    per_token = True

    def step(self, logits, state):
        """[..., C] tag logits -> [...] score, 1 minus the top tag probability (lower: more confident)."""
        return 1.0 - torch.softmax(logits.float(), -1).amax(-1), state

    def halts(self, logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Words' tag logits [W, C] -> (halts [W] bool, top probability [W], tag [W])."""
        top, tag = torch.softmax(logits.float(), -1).max(-1)
        return top >= threshold, top, tag
