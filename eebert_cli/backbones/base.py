"""The one architecture-specific seam: run a deployed classifier layer by layer.

Everything else in eebert (exits, training, calibration, runtime) talks to a
:class:`BackboneAdapter` and never to a model class directly. Supporting a new
encoder family means one module in this folder with one adapter class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..tasks import NAMES


@dataclass(frozen=True)
class Dims:
    """Shapes the FLOPs cost model needs."""

    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_heads: int
    num_labels: int
    #: per layer, how many tokens either side a query attends to (sliding-window attention), None for
    #: the whole sequence; empty: every layer attends to the whole sequence
    attention_spans: tuple[int | None, ...] = ()
    #: hidden x intermediate matrices in one FFN: 2 (up, down), 3 for a gated (GLU) FFN
    ffn_matrices: int = 2

    def attention_span(self, index: int) -> int | None:
        """Tokens either side a query of layer ``index`` (0-based) attends to; None: all of them."""
        return self.attention_spans[index] if self.attention_spans else None


def dims_from_config(config, intermediate: str = "intermediate_size") -> Dims:
    """Read the cost-model shapes uniformly.

    Hidden size, layer count and heads come from optimum's NormalizedConfig when
    optimum knows the family (it maps each family's own attribute names, e.g.
    DistilBERT's ``dim``/``n_layers``/``n_heads``); otherwise from the config's
    standard names. The FFN width has no normalized name, so ``intermediate``
    names the family's attribute.
    """
    try:
        from optimum.utils.normalized_config import NormalizedConfigManager

        norm = NormalizedConfigManager.get_normalized_config_class(config.model_type)(config)
        hidden, layers, heads = norm.hidden_size, norm.num_layers, norm.num_attention_heads
    except (ImportError, KeyError, AttributeError):
        hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    return Dims(int(layers), int(hidden), int(getattr(config, intermediate)), int(heads), int(config.num_labels))


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, T] 0/1 mask -> [B, 1, 1, T] additive mask, from tensor ops only (no data-dependent branches)."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


def select_rows(state: dict, rows: torch.Tensor, per_sample: tuple[str, ...]) -> dict:
    """Keep ``rows`` of the per-sample entries of a dict state; shared entries pass through."""
    return {k: (v.index_select(0, rows) if k in per_sample and v is not None else v) for k, v in state.items()}


class BackboneAdapter(ABC):
    """Runs embeddings, each encoder layer and the deployed head separately.

    ``prepare`` builds whatever per-batch state the layers need (attention mask
    in the implementation's own format, position bias, ...) exactly once, so
    the per-layer loop does no work the full model would not do.
    """

    #: ``config.model_type`` values this adapter handles.
    model_types: ClassVar[tuple[str, ...]] = ()
    #: position ids start after the padding id (RoBERTa-style), so pad_token_id + 1 fewer tokens fit
    offset_positions: ClassVar[bool] = False
    #: whether the embeddings read token_type_ids (segment ids of sentence pairs)
    uses_token_types: ClassVar[bool] = True
    #: heads the adapter runs: a classifier's logits, or one regressed value
    tasks: ClassVar[tuple[str, ...]] = NAMES

    def __init__(self, model: nn.Module):
        self.model = model.eval()

    @property
    @abstractmethod
    def dims(self) -> Dims: ...

    @abstractmethod
    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids -> hidden states entering layer 1."""

    def prepare(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> Any:
        """Per-batch layer state; by default the attention mask in the layers' own format.

        None when nothing is padded (batch size 1): the layers then skip masking. Families
        whose layers need more (relative position bias, ...) override this and :meth:`select`.
        """
        if attention_mask is None:
            return None
        from transformers.masking_utils import create_bidirectional_mask  # here: it imports torch._dynamo (~1 s)

        return create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden,
                                         attention_mask=attention_mask)

    def export_state(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """What :meth:`prepare` returns, built from tensor ops only, for graph export (ONNX tracing).

        A trace records one path through the code, so the state may not depend on the data
        (no "nothing padded, skip the mask" shortcut). Default: the additive ``[B, 1, 1, T]``
        mask BERT-style layers read.
        """
        return additive_mask(attention_mask, hidden.dtype)

    def layer(self, index: int, hidden: torch.Tensor, state: Any) -> torch.Tensor:
        """Run encoder layer ``index`` (0-based); by default ``self._layers[index]`` on (hidden, mask)."""
        return self._layers[index](hidden, state)

    @abstractmethod
    def head(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The deployed classifier on the last layer's hidden states -> logits."""

    def select(self, state: Any, rows: torch.Tensor) -> Any:
        """Keep only ``rows`` of a per-batch state (used when samples leave a batch)."""
        if state is None:
            return None
        if isinstance(state, torch.Tensor):
            return state.index_select(0, rows)
        raise NotImplementedError(f"{type(self).__name__} must implement select() for its state")

    def pooler(self) -> nn.Linear | None:
        """The model's own pooler dense layer, if any (exits may start from it)."""
        return None

    def parameters(self):
        return self.model.parameters()

    # -- whole-model reference, used by tests and the benchmark's deployed row
    @torch.no_grad()
    def forward_all(self, input_ids, attention_mask=None, token_type_ids=None) -> list[torch.Tensor]:
        """Hidden states after every layer (list of L tensors)."""
        hidden = self.embed(input_ids, attention_mask, token_type_ids)
        state = self.prepare(hidden, attention_mask)
        out = []
        for i in range(self.dims.num_layers):
            hidden = self.layer(i, hidden, state)
            out.append(hidden)
        return out
