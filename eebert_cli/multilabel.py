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

from .data import map_labels
from .errors import EebertError


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
    out = torch.zeros(len(labels), num_labels)
    for i, value in enumerate(labels):
        ids = map_labels(label_set(value, source), label2id, num_labels, source)
        if ids:
            out[i, ids] = 1.0
    return out


def label_names(probs: torch.Tensor, id2label: dict[int, str]) -> list[str]:
    """The predicted label set of one example from its per-label probabilities."""
    return [id2label[i] for i in (probs > 0.5).nonzero().flatten().tolist()]


def check_attach(cfg) -> None:
    """Methods that assume one label per example fail now, before the backbone pass."""
    from .objectives import OBJECTIVES

    from .tasks import MULTI_LABEL, objective_for

    objective = objective_for(MULTI_LABEL, cfg.objective)
    if "multi-label" not in getattr(OBJECTIVES.get(objective), "tasks", ()):
        raise EebertError(f"objective {objective!r} assumes one label per example; this model is multi-label",
                          "use --objective bce-distil (the default for multi-label models)")
    if cfg.exits == "leco":
        raise EebertError("LECO's exit search trains with single-label cross-entropy; this model is multi-label",
                          "choose the exit heads yourself, e.g. --exits mean-mlp")
