"""Mean over the non-padding tokens, then a small MLP.

The default: encoders pre-trained with mean pooling (sentence-transformers
MiniLM, MPNet) carry little in early [CLS] vectors, while the token mean is
informative at every depth; on [CLS]-trained encoders it does no worse.
"""

from .base import EXITS, ExitHead, Mlp


@EXITS.register("mean-mlp")
class MeanMlpExit(ExitHead):
    reduction = "mean"

    def __init__(self, dims, width: int | None = None, dropout: float = 0.1):
        super().__init__(dims)
        self.width = width or dims.hidden_size
        self.net = Mlp(dims.hidden_size, self.width, dims.num_labels, dropout)

    def encode(self, features):
        return self.net.encode(features)

    def decode(self, hidden):
        return self.net.decode(hidden)

    def flops(self, seq_len):
        h = self.dims.hidden_size
        return seq_len * h + 2 * h * self.width + 2 * self.width * self.dims.num_labels
