"""Multi-label checkpoints (problem_type "multi_label_classification"): a set of labels per example.

The deployed model answers every label on its own (sigmoid > 0.5), and so do the exits.
Gold labels are read as label sets: a JSON list (``["sports", "politics"]``), or a string
of names or ids separated by ``|`` or ``,`` (``"sports|politics"``; ``"[]"`` for none).
Without gold labels the deployed model's own label sets are the targets. An example's
answer is right when its whole label set is (exact match): per-example and additive, so
the calibration search is the classification one; micro- and macro-F1 over labels are
evaluated exactly at the chosen point and reported (micro-F1 is the headline metric).
"""

from __future__ import annotations

import json

import torch

from ..core.errors import EebertError
from .base import TASKS, Prediction, Task


def label_set(value, source: str) -> list:
    """One example's gold label set as a list of names or ids."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                raise EebertError(f"label {value!r} in {source} is not a valid JSON list",
                                  'write label sets as ["a", "b"] or a|b') from None
            if isinstance(parsed, list):
                return parsed
        sep = "|" if "|" in text else ","
        return [p.strip() for p in text.split(sep) if p.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    raise EebertError(f"label {value!r} in {source} is not a label set", 'write label sets as ["a", "b"] or a|b')


def gold_multi_hot(labels: list, label2id: dict[str, int], num_labels: int, source: str) -> torch.Tensor:
    """[N, C] 0/1 float targets from label sets (names or ids, as the model's config has them)."""
    from ..data import map_labels

    out = torch.zeros(len(labels), num_labels)
    for i, value in enumerate(labels):
        ids = map_labels(label_set(value, source), label2id, num_labels, source)
        if ids:
            out[i, ids] = 1.0
    return out


@TASKS.register("multi-label")
class MultiLabel(Task):
    """Every label on its own (sigmoid > 0.5); a label set is right only whole."""

    objective = "bce-distil"
    criterion = "label-margin"
    metrics = ("micro-f1", "accuracy", "macro-f1")
    gates = False
    fitted_criteria = False
    leco = False
    accuracy_name = "exact-set accuracy"
    columns = (("acc %", "accuracy", "pct"), ("micro-F1 %", "micro_f1", "pct"), ("macro-F1 %", "macro_f1", "pct"),
               ("agree %", "agreement", "pct"))  # accuracy is the exact-match rate

    def answers(self, logits: torch.Tensor) -> torch.Tensor:
        return (logits > 0).long()  # sigmoid(z) > 0.5

    def same(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a == b).all(-1)

    def gold(self, labels: list, label2id: dict, num_labels: int, source: str) -> torch.Tensor:
        return gold_multi_hot(labels, label2id, num_labels, source)

    def targets(self, deployed_logits: torch.Tensor) -> torch.Tensor:
        return self.answers(deployed_logits).float()  # BCE targets

    def predictions(self, logits, exit_layers, id2label) -> list[Prediction]:
        out = []
        for p, layer in zip(torch.sigmoid(logits.float()), exit_layers):
            names = [id2label[i] for i in (p > 0.5).nonzero().flatten().tolist()]
            out.append(Prediction("|".join(names), int(p.argmax()), layer, [round(float(x), 6) for x in p], names))
        return out
