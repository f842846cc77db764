"""MPNet: BERT-like layers plus a relative position bias the encoder computes once per batch.

``MPNetEncoder.forward`` builds the bias [B, heads, T, T] from the sequence length
once and passes it to every layer; ``prepare`` does the same and carries it in the
per-batch state next to the attention mask, and ``select`` keeps both in step
when rows leave a batch. No token types; the head is RoBERTa's (<s>, dense, tanh,
out_proj). Position ids come from the ids with padding_idx 1, as in the model.
"""

from __future__ import annotations


from . import BACKBONES
from .base import BackboneAdapter, additive_mask, dims_from_config, select_rows


@BACKBONES.register("mpnet")
class MPNetAdapter(BackboneAdapter):
    model_types = ("mpnet",)
    offset_positions = True
    uses_token_types = False

    def __init__(self, model):
        super().__init__(model)
        self.encoder = model.mpnet
        self._layers = model.mpnet.encoder.layer
        self._dims = dims_from_config(model.config)

    @property
    def dims(self):
        return self._dims

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        return self.encoder.embeddings(input_ids=input_ids)

    def prepare(self, hidden, attention_mask):
        mask = None
        if attention_mask is not None:  # one unpadded example needs none (the batch-1 loop)
            from transformers.masking_utils import create_bidirectional_mask  # here: it imports torch._dynamo

            mask = create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden,
                                             attention_mask=attention_mask)
        return {"mask": mask, "bias": self.encoder.encoder.compute_position_bias(hidden)}

    def export_state(self, hidden, attention_mask):
        return {"mask": additive_mask(attention_mask, hidden.dtype),
                "bias": self.encoder.encoder.compute_position_bias(hidden)}

    def layer(self, index, hidden, state):
        return self._layers[index](hidden, state["mask"], state["bias"])[0]

    def select(self, state, rows):
        return select_rows(state, rows, ("mask", "bias"))

    def head(self, hidden, attention_mask):
        return self.model.classifier(hidden)

    def pooler(self):
        return self.model.classifier.dense
