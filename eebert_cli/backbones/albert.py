"""ALBERT: one layer group shared across depth.

The encoder runs ``num_hidden_layers`` steps; step i runs layer group
``int(i / (num_hidden_layers / num_hidden_groups))`` (one group in every released
ALBERT), exactly as ``AlbertTransformer.forward`` does, so an exit after step i
reads the same hidden states the deployed model computes there. Embeddings are
``embedding_size`` wide and projected to the hidden size before the first step.
The cost model counts one layer per step (``inner_group_num`` = 1, as released).
"""

from __future__ import annotations


from . import BACKBONES
from .base import BackboneAdapter, dims_from_config


@BACKBONES.register("albert")
class AlbertAdapter(BackboneAdapter):
    model_types = ("albert",)

    def __init__(self, model):
        super().__init__(model)
        self.encoder = model.albert
        self._dims = dims_from_config(model.config)
        cfg = model.config
        self._group = [int(i / (cfg.num_hidden_layers / cfg.num_hidden_groups)) for i in range(cfg.num_hidden_layers)]

    @property
    def dims(self):
        return self._dims

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        return self.encoder.encoder.embedding_hidden_mapping_in(hidden)

    def layer(self, index, hidden, state):
        return self.encoder.encoder.albert_layer_groups[self._group[index]](hidden, state)

    def head(self, hidden, attention_mask):
        enc, m = self.encoder, self.model
        pooled = enc.pooler_activation(enc.pooler(hidden[:, 0])) if enc.pooler is not None else hidden[:, 0]
        return m.classifier(m.dropout(pooled))

    def pooler(self):
        return self.encoder.pooler
