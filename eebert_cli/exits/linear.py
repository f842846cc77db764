"""One Linear on [CLS] (PABEE-style internal classifier)."""

from torch import nn

from .base import EXITS, ExitHead


@EXITS.register("linear")
class LinearExit(ExitHead):
    reduction = "cls"

    def __init__(self, dims, dropout: float = 0.1):
        super().__init__(dims)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(dims.hidden_size, dims.num_labels))

    def encode(self, features):  # no hidden layer: the representation is the [CLS] input itself
        return features

    def decode(self, hidden):
        return self.net(hidden)

    def flops(self, seq_len):
        return 2 * self.dims.hidden_size * self.dims.num_labels
