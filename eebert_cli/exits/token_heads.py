"""Per-token exit heads for taggers (reduction "word"): one answer per token state.

They read each position's state ([B, T, H] at inference, or one row per tagged word
[N, H] from the feature cache when training: a per-token head is the same map either
way) and output tag logits per position. ``token-linear`` starts from the deployed
tagger's own classifier, which reads states of the same width; ``token-mlp`` adds one
hidden layer for early layers whose states are further from the last one's.
"""

from __future__ import annotations

import torch
from torch import nn

from ..tasks import TOKEN_CLASSIFICATION
from .base import EXITS, ExitHead
from .mean_mlp import MeanMlpExit


@EXITS.register("token-linear")
class TokenLinearExit(ExitHead):
    reduction = "word"
    tasks = (TOKEN_CLASSIFICATION,)

    def __init__(self, dims, dropout: float = 0.1):
        super().__init__(dims)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dims.hidden_size, dims.num_labels))

    def encode(self, features):
        return features

    def decode(self, hidden):
        return self.net(hidden)

    def flops(self, seq_len):
        return 2 * seq_len * self.dims.hidden_size * self.dims.num_labels

    def init_from(self, adapter) -> None:
        own = getattr(adapter.model, "classifier", None)
        if isinstance(own, nn.Linear) and own.weight.shape == self.net[1].weight.shape:
            with torch.no_grad():
                self.net[1].weight.copy_(own.weight), self.net[1].bias.copy_(own.bias)


@EXITS.register("token-mlp")
class TokenMlpExit(MeanMlpExit):
    """``mean-mlp``'s small MLP, applied to every token's state instead of their mean."""

    reduction = "word"
    tasks = (TOKEN_CLASSIFICATION,)

    def flops(self, seq_len):
        return 2 * seq_len * (self.dims.hidden_size * self.width + self.width * self.dims.num_labels)
