"""DistilBERT: no token types, six BERT-like blocks, head pre_classifier + ReLU + classifier on [CLS]."""

from __future__ import annotations

import torch

from . import BACKBONES
from .base import BackboneAdapter, dims_from_config


@BACKBONES.register("distilbert")
class DistilBertAdapter(BackboneAdapter):
    model_types = ("distilbert",)
    uses_token_types = False

    def __init__(self, model):
        super().__init__(model)
        self.encoder = model.distilbert
        self._layers = model.distilbert.transformer.layer
        self._dims = dims_from_config(model.config, intermediate="hidden_dim")

    @property
    def dims(self):
        return self._dims

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        return self.encoder.embeddings(input_ids)  # DistilBERT has no segment embeddings

    def head(self, hidden, attention_mask):
        m = self.model
        pooled = torch.relu(m.pre_classifier(hidden[:, 0]))
        return m.classifier(m.dropout(pooled))

    def pooler(self):
        return self.model.pre_classifier
