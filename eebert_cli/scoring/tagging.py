"""Every exit's tags for a split, scored per sentence: what calibration searches and the benchmark reports.

A sentence leaves at one exit (per-sentence exit), so every figure is a sum over
sentences of per-(sentence, exit) counts computed once here: entity spans correct /
predicted / gold (``entities.py``), words right and words agreeing with the deployed
tagger, and FLOPs. Entity F1 at any exit assignment is then exact (F1 of the summed
counts), however many thresholds the search tries.

Words cut off at ``max_length`` get no subword and no tag: they count as ``O`` for
every exit and for the deployed tagger alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.ui import SILENT, UI
from ..model.cost import encoder_flops, exit_charges, exit_costs, full_cost, head_flops, skip_exits
from ..model.features import all_exit_logits
from ..tasks.entities import span_counts
from ..model.token_features import by_sentence, extract_words, words_of


def f1_from_counts(c: torch.Tensor) -> torch.Tensor:
    """F1 from summed counts [..., 3] (correct, predicted, gold); 1 when neither side has entities."""
    den = c[..., 1] + c[..., 2]
    return torch.where(den > 0, 2 * c[..., 0] / den.clamp_min(1), torch.ones_like(den))


@dataclass
class SplitTags:
    logits: torch.Tensor        #: [S, K, T, C] every exit's tag logits per word, NaN past a sentence's end
    tags: torch.Tensor          #: [S, K, T] tag ids per exit (-1 past a sentence's end)
    counts: torch.Tensor        #: [S, K, 3] entity spans correct, predicted, gold (vs the reference)
    right: torch.Tensor         #: [S, K] words tagged as the reference tags them
    agree: torch.Tensor         #: [S, K] words tagged as the deployed tagger tags them
    words: torch.Tensor         #: [S] words per sentence (tagged or cut off)
    cost: torch.Tensor          #: [S, K] FLOPs of leaving at each exit (every earlier exit evaluated)
    static: torch.Tensor        #: [S, K] FLOPs of a model cut at each exit (only that exit evaluated)
    full: torch.Tensor          #: [S] FLOPs of the deployed tagger
    labelled: bool              #: reference = gold tags (else the deployed tagger's)
    gold: list | None           #: gold tag names per sentence
    names: list                 #: tag names per sentence and exit: names[k][s]
    #: the shipped fp32 tagger's figures per sentence when the last exit is not that model (a quantized
    #: backbone): {"names", "counts": [S, 3], "right": [S], "agree": [S]}; it is then the reference (as for
    #: sentences)
    shipped: dict | None = None
    #: [S, K-1] FLOPs evaluating each trainable exit adds to every path that passes it (None: unknown, so an
    #: exit the runtime skips is charged anyway)
    charges: torch.Tensor | None = None

    def cost_as_run(self, skip: frozenset[int] = frozenset()) -> torch.Tensor:
        """[S, K] FLOPs of leaving at each exit when exits ``skip`` are not evaluated (``skipped_exits``: the
        runtime and the export skip an exit calibrated "never" under a stateless criterion)."""
        return skip_exits(self.cost, self.charges, skip) if skip and self.charges is not None else self.cost

    def figures(self, e: torch.Tensor, static: bool = False, skip: frozenset[int] = frozenset()) -> dict:
        """Figures when sentence s leaves at exit ``e[s]`` (``static``: a model cut there, no earlier exits run;
        ``skip``: exits not evaluated, as ``cost_as_run``)."""
        rows = torch.arange(len(e))
        return self._figures(self.counts[rows, e], self.right[rows, e], self.agree[rows, e],
                             (self.static if static else self.cost_as_run(skip))[rows, e].sum().item())

    def shipped_figures(self) -> dict | None:
        """The figures of the tagger as shipped (fp32), when the last exit is not that model."""
        if self.shipped is None:
            return None
        return self._figures(self.shipped["counts"], self.shipped["right"], self.shipped["agree"],
                             self.full.sum().item())

    def _figures(self, counts: torch.Tensor, right: torch.Tensor, agree: torch.Tensor, cost: float) -> dict:
        c = counts.sum(0).double()
        p = (c[0] / c[1]).item() if c[1] else 0.0
        r = (c[0] / c[2]).item() if c[2] else 0.0
        n = self.words.sum().item()
        out = {"entity_precision": p, "entity_recall": r, "entity_f1": 2 * p * r / (p + r) if p + r else 0.0,
               "token_accuracy": right.sum().item() / n, "agreement": agree.sum().item() / n,
               "sentence_agreement": (agree == self.words).double().mean().item(),
               "speedup_flops": self.full.sum().item() / cost}
        if not self.labelled:  # without gold tags, entity figures are against the deployed tagger's
            out.update(entity_precision=None, entity_recall=None, entity_f1=None, token_accuracy=None,
                       entity_f1_vs_deployed=2 * p * r / (p + r) if p + r else 0.0)
        return out

    @property
    def reference_names(self) -> list:
        """Tag names per sentence that count as right: gold, else the deployed tagger's as shipped."""
        return self.gold if self.labelled else (self.names[-1] if self.shipped is None else self.shipped["names"])

    @property
    def reference_counts(self) -> torch.Tensor:
        """[S, 3] entity counts of the deployed tagger as shipped: what a drop is measured from."""
        return self.counts[:, -1] if self.shipped is None else self.shipped["counts"]

    def reference_f1(self, e: torch.Tensor) -> float:
        """The calibration search's figure: entity F1 against the reference (gold, else the deployed tags)."""
        return f1_from_counts(self.counts[torch.arange(len(e)), e].sum(0).double()).item()


def tag_costs(dims, lengths: torch.Tensor, exits) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """[S, K] FLOPs of leaving at each exit, [S, K] of a model cut at each exit, [S] of the deployed
    tagger (its head is per token, with no pooler), and [S, K-1] what each trainable exit adds to the paths
    that pass it."""
    seq = lengths.double()
    own = 2 * seq * dims.hidden_size * dims.num_labels - head_flops(dims)
    cost = exit_costs(dims, lengths, exits.layers, exits.flops)
    cost[:, -1] += own
    full = full_cost(dims, lengths) + own
    reach = encoder_flops(dims, seq)
    static = torch.stack([reach[:, l] + torch.as_tensor(exits.flops(k, seq), dtype=torch.float64)
                          for k, l in enumerate(exits.layers)] + [full], 1)
    return cost, static, full, exit_charges(exits.flops, len(exits.layers), seq)


def _names(ids: torch.Tensor, n_words: list[int], id2label: dict) -> list[list[str]]:
    return [[id2label[int(t)] for t in row[:k]] + ["O"] * (n - k)
            for row, k, n in zip(ids, (ids >= 0).sum(1).tolist(), n_words)]


def _tag_ids(logits: torch.Tensor) -> torch.Tensor:
    """Tag logits [..., T, C] (NaN past a sentence's end) -> tag ids [..., T] (-1 past its end)."""
    valid = ~logits[..., 0].isnan()
    return torch.where(valid, logits.nan_to_num(0).argmax(-1), torch.full_like(valid, -1, dtype=torch.long))


def _scored(pred: list, ref: list, shipped: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sentence of ``pred`` (tag names): entity counts vs ``ref`` [S, 3], words as ``ref`` tags them [S],
    words as the shipped tagger tags them [S]."""
    same = lambda xs, ys: torch.tensor([sum(a == b for a, b in zip(x, y)) for x, y in zip(xs, ys)],  # noqa: E731
                                       dtype=torch.long)
    return torch.tensor(span_counts(ref, pred), dtype=torch.long).view(-1, 3), same(pred, ref), same(pred, shipped)


#: sentences whose word states are held at once while a split's exit logits are computed
SENTENCES_PER_PASS = 1024


def exit_logits(artifact, words, batch_size: int = 64, chunk: int = SENTENCES_PER_PASS) -> torch.Tensor:
    """Every exit's tag logits at each tagged word [W, K, C] (the deployed tagger's last), a chunk of
    sentences at a time: the word states at every exit layer ([W, K, H], gigabytes for a large split of a
    12-layer model) live one chunk at a time, the logits ([W, K, C]) for the whole split."""
    deployed, exits = artifact.deployed, artifact.exits
    parts = []
    for a in range(0, len(words), chunk):
        wf = extract_words(deployed.adapter, deployed.model, words.subset(a, min(len(words), a + chunk)),
                           exits.layers, batch_size)
        parts.append(all_exit_logits(exits, wf.features))
    return torch.cat(parts) if parts else torch.empty(0, len(exits.layers) + 1, deployed.adapter.dims.num_labels)


def runtime_exit_logits(artifact, words, runtime: str, ui: UI = SILENT) -> torch.Tensor:
    """``exit_logits`` as ``runtime`` computes them, one sentence at a time (``Runtime.exit_logits``): each
    tagged word's row read at its first subword, in the simulation's order."""
    from ..deploy.runtimes import RUNTIMES

    types = words.enc.token_type_ids or [None] * len(words)
    with ui.progress(f"{runtime}: a scratch export, then one sentence at a time ({len(words)} sentences)",
                     len(words)) as advance:
        per_sentence = RUNTIMES.get(runtime).exit_logits(artifact, zip(words.enc.input_ids, types), advance)
    rows = [torch.from_numpy(got[:, [p for p, w in enumerate(wi) if w >= 0]]).transpose(0, 1)  # [words, K, C]
            for got, wi in zip(per_sentence, words.word_index)]
    return torch.cat(rows) if rows else torch.empty(0, len(artifact.exits.layers) + 1,
                                                    artifact.deployed.adapter.dims.num_labels)


def split_tags(artifact, data, split: str, batch_size: int = 64, runtime: str = "pytorch",
               ui: UI = SILENT) -> SplitTags:
    """``runtime``: whose exit logits are scored; "pytorch", the batched simulation (``exit_logits``); another
    runtime's pass, one sentence at a time, shows its progress on ``ui``."""
    deployed, exits = artifact.deployed, artifact.exits
    s = data.split(split)
    words = words_of(deployed.tokenizer, s, artifact.config["max_length"], deployed.label2id,
                     len(deployed.id2label), f"{data.name} ({split} split)")
    per_word = exit_logits(artifact, words, batch_size) if runtime == "pytorch" else \
        runtime_exit_logits(artifact, words, runtime, ui)                       # [W, K, C]
    logits = by_sentence(per_word, words.offsets()).transpose(1, 2)        # [S, K, T, C]
    tags = _tag_ids(logits)
    n_words = [len(w) for w in words.words]
    K = logits.shape[1]
    names = [_names(tags[:, k], n_words, deployed.id2label) for k in range(K)]
    gold = None if words.tags is None else [[deployed.id2label[t] for t in sent] for sent in words.tags]
    shipped = names[-1]  # the deployed tagger as shipped: the last exit, unless the backbone was quantized
    if getattr(artifact, "original", None) is not None:
        orig = artifact.original
        sw = extract_words(orig.adapter, orig.model, words, [], batch_size)
        shipped = _names(_tag_ids(by_sentence(sw.features.teacher, sw.offsets)), n_words, deployed.id2label)
    ref = gold if gold is not None else shipped
    per_exit = [_scored(names[k], ref, shipped) for k in range(K)]
    counts, right, agree = (torch.stack([x[j] for x in per_exit], 1) for j in range(3))
    cost, static, full, charges = tag_costs(deployed.adapter.dims, words.enc.lengths, exits)
    extra = None if shipped is names[-1] else \
        {"names": shipped, **dict(zip(("counts", "right", "agree"), _scored(shipped, ref, shipped)))}
    return SplitTags(logits, tags, counts, right, agree, torch.tensor(n_words), cost, static, full, gold is not None,
                     gold, names, extra, charges)
