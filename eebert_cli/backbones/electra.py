"""ELECTRA discriminators: BERT layers, an optional embedding projection, a gelu classification head."""

from __future__ import annotations


from . import BACKBONES
from .base import BackboneAdapter, dims_from_config


@BACKBONES.register("electra")
class ElectraAdapter(BackboneAdapter):
    model_types = ("electra",)

    def __init__(self, model):
        super().__init__(model)
        self.encoder = model.electra
        self._layers = model.electra.encoder.layer
        self._dims = dims_from_config(model.config)

    @property
    def dims(self):
        return self._dims

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if hasattr(self.encoder, "embeddings_project"):  # embedding_size != hidden_size
            hidden = self.encoder.embeddings_project(hidden)
        return hidden

    def head(self, hidden, attention_mask):
        return self.model.classifier(hidden)  # <s> -> dense -> gelu -> out_proj

    def pooler(self):
        return self.model.classifier.dense
