"""ModernBERT: rotary positions, alternating global / sliding-window attention, a pre-norm stack.

``ModernBertModel.forward`` builds, once per batch, two masks (full bidirectional, and the
sliding window ``|q - k| <= local_attention // 2``) and one rotary table per layer type
(global and local rope theta differ); each layer reads the pair of its own
``config.layer_types`` entry. ``prepare`` builds the same with the same transformers
functions and carries them in the state; ``select`` keeps the masks' rows (the rotary
tables are shared by the batch). Positions are ``0..T-1`` whatever the padding, as in the
model. Layers are pre-norm and the last hidden states go through ``final_norm`` before the
head, so the head is: final_norm -> ``cls`` ([CLS]) or ``mean`` (masked mean) pooling, as
``config.classifier_pooling`` says -> ``ModernBertPredictionHead`` (dense, activation,
norm) -> dropout -> classifier. Exits read the layers' raw (un-normed) outputs.

The layers run on the padded eager / sdpa path with explicit masks; a checkpoint loaded
for flash attention (the unpadded path) is switched to sdpa so the masks apply. No token
types. The FFN is gated (GLU: three hidden x intermediate matrices) and local layers
attend to a window only, which ``dims`` tells the cost model.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from . import BACKBONES
from .base import BackboneAdapter, additive_mask, dims_from_config, select_rows

MASKED = ("full_attention", "sliding_attention")  # per-sample state entries (masks, one per layer type)


@BACKBONES.register("modernbert")
class ModernBertAdapter(BackboneAdapter):
    model_types = ("modernbert",)
    uses_token_types = False

    def __init__(self, model):
        if model.config._attn_implementation not in ("eager", "sdpa"):
            model.set_attn_implementation("sdpa")  # the padded path, where explicit masks apply
        super().__init__(model)
        self.encoder = model.model
        self._layers = model.model.layers
        cfg = model.config
        self._types = [layer.attention_type for layer in self._layers]
        self.window = cfg.sliding_window  # tokens either side a local query attends to
        spans = tuple(self.window if t == "sliding_attention" else None for t in self._types)
        self._dims = replace(dims_from_config(cfg), attention_spans=spans, ffn_matrices=3)

    @property
    def dims(self):
        return self._dims

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        return self.encoder.embeddings(input_ids=input_ids)

    def _rope(self, hidden):
        positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
        return {t: self.encoder.rotary_emb(hidden, positions, t) for t in set(self._types)}

    def prepare(self, hidden, attention_mask):
        # imported here: masking_utils imports torch._dynamo, which `eebert --help` need not wait for
        from transformers.masking_utils import create_bidirectional_mask, create_bidirectional_sliding_window_mask

        kw = dict(config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask)
        return {"full_attention": create_bidirectional_mask(**kw),
                "sliding_attention": create_bidirectional_sliding_window_mask(**kw), "rope": self._rope(hidden)}

    def export_state(self, hidden, attention_mask):
        # additive masks from tensor ops: the padding mask, and it within the window for local layers
        full = additive_mask(attention_mask, hidden.dtype)
        pos = torch.arange(hidden.shape[1], device=hidden.device)
        near = (pos[:, None] - pos[None, :]).abs() <= self.window
        sliding = full.masked_fill(~near, torch.finfo(hidden.dtype).min)
        return {"full_attention": full, "sliding_attention": sliding, "rope": self._rope(hidden)}

    def layer(self, index, hidden, state):
        kind = self._types[index]
        return self._layers[index](hidden, attention_mask=state[kind], position_embeddings=state["rope"][kind])

    def select(self, state, rows):
        return select_rows(state, rows, MASKED)

    def head(self, hidden, attention_mask):
        m = self.model
        hidden = self.encoder.final_norm(hidden)
        if m.config.classifier_pooling == "mean":
            if attention_mask is None:
                attention_mask = torch.ones(hidden.shape[:2], device=hidden.device, dtype=torch.bool)
            pooled = (hidden * attention_mask.unsqueeze(-1)).sum(dim=1) / attention_mask.sum(dim=1, keepdim=True)
        else:
            pooled = hidden[:, 0]
        return m.classifier(m.drop(m.head(pooled)))

    def pooler(self):
        return self.model.head.dense
