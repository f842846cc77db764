"""DeBERTa-v2/v3: disentangled relative attention, computed once per batch.

``DebertaV2Encoder.forward`` derives, once, the [B,1,T,T] attention mask from the
2-D mask, the relative positions (bucketed, [1,T,T]) and the (normalised)
relative embeddings, and hands them to every layer; ``prepare`` does the same.
The embeddings multiply by the 2-D mask (all ones when nothing is padded, as the
model does), and the optional convolution after layer 1 reads the embedding
output and the 2-D mask, so both travel in the state. Head: ContextPooler
(dense + activation on [CLS]), dropout, classifier.
"""

from __future__ import annotations

import torch

from . import BACKBONES
from .base import BackboneAdapter, dims_from_config, select_rows


@BACKBONES.register("deberta-v2")
class DebertaV2Adapter(BackboneAdapter):
    model_types = ("deberta-v2",)

    def __init__(self, model):
        super().__init__(model)
        self.encoder = model.deberta
        self._layers = model.deberta.encoder.layer
        self._dims = dims_from_config(model.config)

    @property
    def dims(self):
        return self._dims

    @staticmethod
    def _mask2d(ref: torch.Tensor, attention_mask):
        return torch.ones(ref.shape[:2], device=ref.device) if attention_mask is None else attention_mask

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        return self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                       mask=self._mask2d(input_ids, attention_mask))

    def prepare(self, hidden, attention_mask):
        enc = self.encoder.encoder
        mask2d = self._mask2d(hidden, attention_mask)
        state = {"mask": enc.get_attention_mask(mask2d), "rel_pos": enc.get_rel_pos(hidden),
                 "rel_emb": enc.get_rel_embedding(), "input_mask": mask2d, "first": None}
        if enc.conv is not None:
            state["first"] = hidden  # the conv after layer 1 reads the embedding output
        return state

    def export_state(self, hidden, attention_mask):
        return self.prepare(hidden, attention_mask)  # tensor ops only, and given a mask, no branch on the data

    def layer(self, index, hidden, state):
        out = self._layers[index](hidden, state["mask"], query_states=None, relative_pos=state["rel_pos"],
                                  rel_embeddings=state["rel_emb"])[0]
        conv = self.encoder.encoder.conv
        if index == 0 and conv is not None:
            out = conv(state["first"], out, state["input_mask"])
        return out

    def select(self, state, rows):
        return select_rows(state, rows, ("mask", "input_mask", "first"))

    def head(self, hidden, attention_mask):
        m = self.model
        return m.classifier(m.dropout(m.pooler(hidden)))

    def pooler(self):
        return self.model.pooler.dense
