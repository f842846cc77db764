"""DeeBERT's off-ramp: Linear(h,h), tanh, dropout, Linear(h,C) on [CLS], started from the pooler."""

import torch
from torch import nn

from .base import EXITS, ExitHead


@EXITS.register("pooler-mlp")
class PoolerMlpExit(ExitHead):
    reduction = "cls"

    def __init__(self, dims, dropout: float = 0.1):
        super().__init__(dims)
        h = dims.hidden_size
        self.dense = nn.Linear(h, h)
        self.out = nn.Sequential(nn.Tanh(), nn.Dropout(dropout), nn.Linear(h, dims.num_labels))

    def encode(self, features):
        return self.out[0](self.dense(features))

    def decode(self, hidden):
        return self.out[2](self.out[1](hidden))

    def init_from(self, adapter):
        pooler = adapter.pooler()
        if pooler is not None and pooler.weight.shape == self.dense.weight.shape:
            with torch.no_grad():
                self.dense.weight.copy_(pooler.weight)
                if pooler.bias is None:  # e.g. ModernBERT's head dense (classifier_bias=False)
                    self.dense.bias.zero_()
                else:
                    self.dense.bias.copy_(pooler.bias)

    def flops(self, seq_len):
        h = self.dims.hidden_size
        return 2 * h * h + 2 * h * self.dims.num_labels
