"""Per-token exit for taggers (TOKEE-like): a confident token stops being updated.

After each exit, every word still running is tagged by that exit's head; a word whose top
tag probability reaches the threshold keeps that tag and halts (its later subwords halt with
it; special tokens run to the end). Later layers compute queries, attention output and the
feed-forward only for the positions still running, while halted positions keep serving as
keys and values with their last state: keys and values are projected from every position,
so the tokens still running attend to states that stopped changing. That changes what they
compute (the layers were trained on states that all move), which is why the threshold is
calibrated by running this very pass on validation, not by simulating it from cached states.

BERT-style layers only (query/key/value, attention output, intermediate, output modules:
BERT, MiniLM, RoBERTa, ELECTRA); one sentence at a time (batch size 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.errors import EebertError
from .tagger_runtime import Tagger
from .token_features import tag_logits


def check_layers(adapter) -> None:
    layer = adapter._layers[0] if hasattr(adapter, "_layers") else None
    sa = getattr(getattr(layer, "attention", None), "self", None)
    if sa is None or not all(hasattr(sa, n) for n in ("query", "key", "value")) or not hasattr(layer, "intermediate"):
        raise EebertError(f"per-token exit runs BERT-style layers; this checkpoint is {adapter.model.config.model_type}",
                          "use the per-sentence exit (`eebert calibrate`, `predict` and `serve` run it)")


def partial_layer(layer, hidden: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Layer on one unpadded sentence [T, H], updating only positions ``active`` [A]; every position
    serves as key and value."""
    sa = layer.attention.self
    nh, hd = sa.num_attention_heads, sa.attention_head_size
    x = hidden.index_select(0, active)
    q = sa.query(x).view(-1, nh, hd).transpose(0, 1)
    k = sa.key(hidden).view(-1, nh, hd).transpose(0, 1)
    v = sa.value(hidden).view(-1, nh, hd).transpose(0, 1)
    ctx = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(len(active), nh * hd)
    a = layer.attention.output(ctx, x)
    out = layer.output(layer.intermediate(a), a)
    return hidden.index_copy(0, active, out)


def layer_flops(dims, t: int, a: int) -> float:
    """FLOPs of one layer on T positions with A of them updated."""
    h, f = dims.hidden_size, dims.intermediate_size
    return 2 * t * 2 * h * h + 2 * a * (2 * h * h + dims.ffn_matrices * h * f) + 4 * h * a * t


class TokenHaltTagger(Tagger):
    """``Tagger``'s rows (``predict``) from the per-token pass; each word carries its own exit layer.

    ``threshold`` is given, not calibrated (``benchmarks/token_exit.py`` sweeps it), so an
    uncalibrated artifact runs too."""

    def __init__(self, artifact, threshold: float, criterion: str = "token-maxprob"):
        from ..criteria import CRITERIA

        self.artifact, self.deployed, self.exits = artifact, artifact.deployed, artifact.exits
        self.adapter = self.deployed.adapter
        check_layers(self.adapter)
        self.threshold = threshold
        self.criterion = CRITERIA.build(criterion)  # when a word halts (criteria/token.py)
        if not self.criterion.per_token:
            raise EebertError(f"criterion {criterion!r} decides per sentence, not per word",
                              "use a per-token criterion, e.g. token-maxprob")
        self.max_length = artifact.config["max_length"]
        self.num_layers = self.adapter.dims.num_layers

    def tag_words(self, words: list[list[str]], batch_size: int = 1, exit_at: int | None = None):
        """Per sentence: (tag ids, top probabilities, exit layer of each word), one sentence at a time."""
        if exit_at is not None:
            raise EebertError("the per-token exit halts words by their own confidence; it forces no exit",
                              "force an exit with the per-sentence tagger")
        return [self.tag_one(w)[:3] for w in words]

    @torch.inference_mode()
    def tag_one(self, words: list[str]) -> tuple[list[int], list[float], list[int], float]:
        """Tag ids, probabilities and halting layers of the tagged words, and the FLOPs spent."""
        enc = self.deployed.tokenizer([words], is_split_into_words=True, truncation=True, max_length=self.max_length)
        starts: dict[int, int] = {}
        owner = []  # per position: the first position of its word (it halts with it); -1 for special tokens
        for p, w in enumerate(enc.word_ids(0)):
            owner.append(-1 if w is None else starts.setdefault(w, p))
        word_pos = [starts[w] for w in sorted(starts)]
        ids = torch.tensor([enc["input_ids"][0]])
        d = self.adapter.dims
        t = len(owner)
        hidden = self.adapter.embed(ids, None, None)[0]
        flops = 10.0 * t * d.hidden_size
        n = len(word_pos)
        tags, conf, layer_of = [0] * n, [0.0] * n, [0] * n
        running = torch.ones(t, dtype=torch.bool)
        open_words = list(range(n))
        k = 0
        for i in range(d.num_layers):
            a = int(running.sum())
            if a == t:
                hidden = self.adapter.layer(i, hidden[None], None)[0]
            else:
                hidden = partial_layer(self.adapter._layers[i], hidden, running.nonzero().squeeze(1))
            flops += layer_flops(d, t, a)
            if k < len(self.exits.layers) and self.exits.layers[k] == i + 1:
                pos = torch.tensor([word_pos[j] for j in open_words], dtype=torch.long)
                halt, top, arg = self.criterion.halts(self.exits.heads[k](hidden.index_select(0, pos).float()),
                                                 self.threshold)
                flops += self.exits.heads[k].flops(len(open_words))
                keep = []
                for j, h, c, g in zip(open_words, halt.tolist(), top.tolist(), arg.tolist()):
                    if h:
                        tags[j], conf[j], layer_of[j] = g, c, i + 1
                        running[[q for q in range(t) if owner[q] == word_pos[j]]] = False
                    else:
                        keep.append(j)
                open_words = keep
                k += 1
                if not open_words:
                    return tags, conf, layer_of, flops
        pos = torch.tensor([word_pos[j] for j in open_words], dtype=torch.long)
        p = torch.softmax(tag_logits(self.deployed.model, hidden.index_select(0, pos)).float(), -1)
        flops += 2 * len(open_words) * d.hidden_size * d.num_labels
        for j, c, g in zip(open_words, *[x.tolist() for x in p.max(-1)]):
            tags[j], conf[j], layer_of[j] = g, c, d.num_layers
        return tags, conf, layer_of, flops
