"""RoBERTa and its multilingual / French siblings (XLM-R, CamemBERT): BERT layers, RoBERTa head.

Position ids come from the input ids (padding_idx = config.pad_token_id), which the
embeddings compute themselves; the head takes the <s> token through
dense + tanh + out_proj (there is no pooler on a RoBERTa classifier).
"""

from __future__ import annotations


from . import BACKBONES
from .base import BackboneAdapter, dims_from_config


@BACKBONES.register("roberta")
class RobertaAdapter(BackboneAdapter):
    model_types = ("roberta", "xlm-roberta", "camembert")
    offset_positions = True

    def __init__(self, model):
        super().__init__(model)
        self.encoder = model.roberta
        self._layers = model.roberta.encoder.layer
        self._dims = dims_from_config(model.config)

    @property
    def dims(self):
        return self._dims

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        return self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)

    def head(self, hidden, attention_mask):
        return self.model.classifier(hidden)

    def pooler(self):
        return self.model.classifier.dense
