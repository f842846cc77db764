"""BERxiT learning-to-exit: a small module predicts whether an exit's answer is right; exit when it says so.

One ``Linear(H, 1)`` + sigmoid, shared by all exits (BERxiT's LTE module), reads
the same reduced hidden states as the exit head and is regressed (binary
cross-entropy) on whether that exit's prediction is correct. It is trained at
``eebert attach`` right after the exits, through the criterion hook :meth:`Learned.fit`,
on the training rows held out from exit training (their correctness is what unseen
data looks like), and saved in the artifact as ``learned_exit.safetensors``
(declared in ``eebert_config.json``).
Score = 1 - predicted probability of being correct.
"""

from __future__ import annotations

import torch
from torch import nn

from ..model.device import adamw
from ..core.errors import EebertError
from .base import CRITERIA, Criterion, fitted_record

LEARNED_FILE = "learned_exit.safetensors"


class LearnToExit(nn.Module):
    """P(exit is correct | its reduced hidden states); inputs standardised with training statistics."""

    def __init__(self, hidden: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(hidden))
        self.register_buffer("scale", torch.ones(hidden))
        self.linear = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear((features.float() - self.mean) / self.scale)).squeeze(-1)


def fit_learn_to_exit(features: torch.Tensor, correct: torch.Tensor, steps: int = 300, lr: float = 1e-2,
                      weight_decay: float = 1e-2, seed: int = 0) -> tuple[LearnToExit, dict]:
    """Fit on features [N, K, H] of K exits and whether each exit was right [N, K] (full batch)."""
    torch.manual_seed(seed)
    x = features.reshape(-1, features.shape[-1]).float()
    y = correct.reshape(-1).float()
    module = LearnToExit(x.shape[1])
    module.mean.copy_(x.mean(0))
    module.scale.copy_(x.std(0).clamp_min(1e-6) if x.shape[0] > 1 else torch.ones(x.shape[1]))
    opt = adamw(module.linear.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCELoss()
    for _ in range(steps):
        loss = loss_fn(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.eval()
    with torch.no_grad():
        p = module(x)
        report = {"examples": int(features.shape[0]), "loss": float(loss_fn(p, y)),
                  "share_correct": float(y.mean()), "accuracy": float(((p > 0.5).float() == y).float().mean())}
    return module, report


MAX_ROWS = 8192  #: held-out rows the scorer is fitted on at most (a seeded subset)


@CRITERIA.register("learned")
class Learned(Criterion):
    needs_features = True
    trained_file = LEARNED_FILE

    def __init__(self):
        self.module: LearnToExit | None = None

    @classmethod
    def fit(cls, exits, features, targets, rows, reduction):
        """Fit the scorer on ``rows`` (all rows if none were held out from exit training)."""
        from ..model.device import cpu_threads

        if len(rows) == 0:
            rows = torch.arange(len(targets))
        if len(rows) > MAX_ROWS:  # a small scorer; its inputs are then read into RAM whatever the data's size
            rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(0))[:MAX_ROWS]]
        get = features.getter(rows)
        x = torch.stack([get(reduction, layer) for layer in exits.layers], 1)
        exits.eval()
        with torch.no_grad():
            pred = torch.stack(exits(get), 1).argmax(-1)
        with cpu_threads(1):  # threads would mostly wait on each other for a model this small (see train.py)
            module, report = fit_learn_to_exit(x, pred == targets[rows, None])
        return module.state_dict(), {"trained_on": "rows held out from exit training", "reduction": reduction,
                                     **report}

    def bind(self, artifact) -> None:
        from safetensors.torch import load_file

        info = fitted_record(artifact, self.registry_name)
        if not info:
            raise EebertError(f"{artifact.path} has no learned exit scorer (attached by an older eebert)",
                              "re-run `eebert attach` to train it, or choose another --criterion")
        state = load_file(artifact.path / info["file"])
        module = LearnToExit(state["mean"].shape[0])
        module.load_state_dict(state)
        self.module = module.eval()

    def step(self, logits, state, features=None):
        if features is None:  # the deployed head: it always answers, its score is never read
            return torch.zeros(logits.shape[0], device=logits.device), state
        if self.module is None:
            raise EebertError("criterion 'learned' has no trained scorer", "load it from an artifact (bind)")
        with torch.no_grad():
            return 1.0 - self.module(features), state
