"""BADGE divergence-based exiting: exit when this exit's prediction barely differs from the earlier ones.

Score = D(p_k, r_k): a divergence between exit k's class distribution p_k and
a reference r_k, the previous exit's distribution (``reference="previous"``)
or the mean of all earlier exits' distributions (``reference="mean"``).
``divergence``: ``kl`` = KL(p_k || r_k), ``reverse-kl`` = KL(r_k || p_k),
``symmetric-kl`` = their sum, ``js`` = Jensen-Shannon (bounded by log 2).
With ``patience`` t > 1 the score is the largest of the last t divergences, so
a sample exits only when the prediction stayed settled for t consecutive
exits. Exits with fewer than t earlier exits to compare score NaN: they never
fire (the first exit has nothing to compare with).
"""

import torch

from .base import CRITERIA, Criterion

DIVERGENCES = ("kl", "reverse-kl", "symmetric-kl", "js")
REFERENCES = ("previous", "mean")


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    return (logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0)


def divergence(kind: str, logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    if kind == "kl":
        return _kl(logp, logq)
    if kind == "reverse-kl":
        return _kl(logq, logp)
    if kind == "symmetric-kl":
        return _kl(logp, logq) + _kl(logq, logp)
    logm = torch.logaddexp(logp, logq) - torch.log(torch.tensor(2.0))
    return 0.5 * (_kl(logp, logm) + _kl(logq, logm))


@CRITERIA.register("dge")
class Dge(Criterion):
    def __init__(self, divergence: str = "js", reference: str = "previous", patience: int = 1):
        if divergence not in DIVERGENCES:
            raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
        if int(patience) != patience or patience < 1:
            raise ValueError(f"patience must be a whole number >= 1, got {patience}")
        self.divergence, self.reference, self.patience = divergence, reference, int(patience)

    def params(self):
        return {"divergence": self.divergence, "reference": self.reference, "patience": self.patience}

    def init_state(self, batch, device=None):
        # ref: log-probs of the reference (previous exit, or the running mean of earlier exits' probs);
        # seen: exits so far; recent: the last `patience` divergences (NaN = not yet available).
        return {"ref": torch.zeros(batch, 0, device=device), "seen": torch.zeros(batch, device=device),
                "recent": torch.full((batch, self.patience), float("nan"), device=device)}

    def step(self, logits, state):
        logp = torch.log_softmax(logits.float(), -1)
        n = logits.shape[0]
        if state["ref"].shape[1] == 0:  # first exit: nothing to compare with
            d = torch.full((n,), float("nan"), device=logits.device)
            ref = logp
        else:
            d = divergence(self.divergence, logp, state["ref"])
            if self.reference == "previous":
                ref = logp
            else:  # running mean of probabilities, kept in log space
                seen = state["seen"][:, None]
                mean = (state["ref"].exp() * seen + logp.exp()) / (seen + 1)
                ref = torch.log(mean.clamp_min(torch.finfo(mean.dtype).tiny))
        recent = torch.cat([state["recent"][:, 1:], d[:, None]], 1)
        # max over the window; any NaN (too few comparisons yet) makes the score NaN
        score = torch.where(recent.isnan().any(1), torch.full_like(d, float("nan")), recent.amax(1))
        return score, {"ref": ref, "seen": state["seen"] + 1, "recent": recent}
