"""Token classification (NER, PII, slot filling): one tag per word, entities scored as spans.

Exit heads see one row per tagged word (its first subword's state, the transformers
convention), so the per-example arithmetic of the base class (answers, agreement,
cross-entropy) applies per word; what differs is scored per sentence: a sentence
leaves at one exit (``criteria/sentence.py``), and the headline figure is entity-level
F1 with conlleval's exact-span semantics (``tasks/entities.py``), which is not a sum
over words, so calibration evaluates it exactly at every candidate point
(``scoring/tagging_calibrate.py``).
"""

from __future__ import annotations

import torch

from .base import TASKS, Prediction, Task


def _as_sentences(tags) -> list[list[str]]:
    """Tag lists as given, or a tensor of tag ids read as one-word sentences (ids as type names)."""
    if isinstance(tags, torch.Tensor):
        return [[f"I-{int(t)}"] for t in tags.reshape(-1)]
    return [list(s) for s in tags]


@TASKS.register("token-classification")
class TokenClassification(Task):
    criterion = "sentence-min"
    exits = "token-mlp"
    metrics = ("entity-f1", "token-accuracy")
    level = "token"
    fixed_headline = True
    gates = False
    fitted_criteria = False
    leco = False
    curves = False
    columns = (("entity P %", "entity_precision", "pct"), ("entity R %", "entity_recall", "pct"),
               ("entity F1 %", "entity_f1", "pct"), ("token acc %", "token_accuracy", "pct"),
               ("agree %", "agreement", "pct"))

    def report_metric(self, labelled: bool) -> str:
        return "entity_f1" if labelled else "agreement"

    def row(self, pred, labels, deployed_pred) -> dict:
        """Figures for predicted tags (lists of tag names per sentence, or a tensor of ids)."""
        from .entities import entity_scores, token_accuracy

        pred = _as_sentences(pred)
        deployed = _as_sentences(deployed_pred)
        row = {"agreement": token_accuracy(pred, deployed),
               "sentence_agreement": sum(p == d for p, d in zip(pred, deployed)) / max(len(pred), 1)}
        if labels is None:
            return {**row, "entity_precision": None, "entity_recall": None, "entity_f1": None,
                    "token_accuracy": None}
        gold = _as_sentences(labels)
        s = entity_scores(gold, pred)
        return {**row, "entity_precision": s["precision"], "entity_recall": s["recall"], "entity_f1": s["f1"],
                "token_accuracy": token_accuracy(pred, gold)}

    def metric_values(self, pred, ref) -> dict[str, float | None]:
        r = self.row(pred, ref, pred)
        return {"entity_f1": r["entity_f1"], "token_accuracy": r["token_accuracy"]}

    def predictions(self, logits: torch.Tensor, exit_layers: list[int], id2label: dict[int, str]) -> list[Prediction]:
        """Per-word logits [B, C] -> one tag per word (spans are the tagger's runtime's, which knows the words)."""
        return super().predictions(logits, exit_layers, id2label)
