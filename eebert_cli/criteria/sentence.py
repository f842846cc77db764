"""Per-sentence exit for taggers (SENTEE-like): a sentence leaves at the first exit where its tokens
are confident enough, as a whole.

An exit's logits are per token, [B, T, C]; positions that carry no tag (special tokens,
later subwords, padding) are NaN and are not read. A token's confidence is its top tag
probability; the sentence's score is 1 minus the least confident token's (``sentence-min``),
the mean (``sentence-mean``) or a low quantile (``sentence-quantile``), so one doubtful
word keeps the sentence running under the first and the last rule.
"""

from __future__ import annotations

import torch

from ..core.registry import Range
from ..tasks import TOKEN_CLASSIFICATION
from .base import CRITERIA, Criterion


def token_confidence(logits: torch.Tensor) -> torch.Tensor:
    """[B, T] top tag probability per position; NaN where the logits are NaN (no tag there)."""
    return torch.softmax(logits.float(), -1).amax(-1)


class SentenceCriterion(Criterion):
    tasks = (TOKEN_CLASSIFICATION,)

    def pool(self, conf: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, logits, state):
        return 1.0 - self.pool(token_confidence(logits)), state


@CRITERIA.register("sentence-min")
class SentenceMin(SentenceCriterion):
    def pool(self, conf):
        return torch.where(conf.isnan(), torch.ones_like(conf), conf).amin(-1)


@CRITERIA.register("sentence-mean")
class SentenceMean(SentenceCriterion):
    def pool(self, conf):
        return conf.nanmean(-1)


@CRITERIA.register("sentence-quantile")
class SentenceQuantile(SentenceCriterion):
    bounds = {"q": Range(0.0, 1.0)}
    grid = {"q": [0.1, 0.25]}

    def __init__(self, q: float = 0.1):
        super().__init__()
        self.q = q

    def params(self):
        return {"q": self.q}

    def pool(self, conf):
        return torch.nanquantile(conf.double(), self.q, dim=-1).to(conf.dtype)
