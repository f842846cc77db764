"""BERT (and MiniLM, which is a BERT) sequence classifiers."""

from __future__ import annotations

from . import BACKBONES
from .base import BackboneAdapter, Dims


@BACKBONES.register("bert")
class BertAdapter(BackboneAdapter):
    model_types = ("bert",)

    def __init__(self, model):
        super().__init__(model)
        self.encoder = model.bert
        self._layers = model.bert.encoder.layer
        cfg = model.config
        self._dims = Dims(cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size,
                          cfg.num_attention_heads, cfg.num_labels)

    @property
    def dims(self) -> Dims:
        return self._dims

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        return self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def head(self, hidden, attention_mask):
        pooled = self.encoder.pooler(hidden) if self.encoder.pooler is not None else hidden[:, 0]
        return self.model.classifier(self.model.dropout(pooled))

    def pooler(self):
        return self.encoder.pooler.dense if self.encoder.pooler is not None else None
