"""A task: everything that differs between what checkpoints do (classify, regress, tag several labels).

Every other module asks the checkpoint's :class:`Task` and never compares task names:
targets (gold or the deployed model's), answers and when two agree, the per-example
figure the calibration search adds up, the metrics and the headline one, the exit
head's output width, and the rows ``predict`` and ``serve`` return. A new task is one
module in this package with ``@TASKS.register("name")``; ``tests/test_registry_contract.py``
covers it like every other component.

Outputs are ``[..., C]`` with the example axes first, so a per-token task (outputs
``[B, T, C]``, ``level = "token"``) can reuse the arithmetic; what it decides per token
or per sentence is its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..core.errors import EebertError
from .metrics import METRICS
from ..core.registry import Registry


@dataclass
class Prediction:
    """One answer as ``predict``, ``--output`` files, Ray and ``serve`` return it."""

    label: str                        #: multi-label models: the label set joined with "|" ("" for none)
    label_id: int
    exit_layer: int
    probs: list[float]                #: softmax, or per-label sigmoid for multi-label models
    labels: list[str] | None = None   #: multi-label models: the predicted label set


def prediction_row(p: Prediction) -> dict:
    """One prediction as every output writes it: ``predict --json``, ``--output`` files, the Ray executor."""
    return {"label": p.label, "exit_layer": p.exit_layer, "probs": p.probs,
            **({"labels": p.labels} if p.labels is not None else {})}


def _rate(pred: torch.Tensor, ref: torch.Tensor | None, same) -> float | None:
    return None if ref is None else same(pred, ref).double().mean().item()


class Task:
    """Single-label classification semantics; other tasks override what differs."""

    objective: ClassVar[str] = "ce-distil"     #: default objective
    criterion: ClassVar[str] = "entropy"       #: default criterion
    exits: ClassVar[str] = "mean-mlp"          #: default exit head
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "macro-f1")  #: reported, the headline first
    level: ClassVar[str] = "sequence"          #: "token": one answer per token (outputs [B, T, C])
    gates: ClassVar[bool] = True               #: SmartBERT gates (trained on single-label correctness)
    fitted_criteria: ClassVar[bool] = True     #: trained criteria (they predict single-label correctness)
    leco: ClassVar[bool] = True                #: LECO's search (trains with single-label cross-entropy)
    #: --max-drop is kept on a confidence bound of per-example correctness (else a plain budget, see regression)
    certified_drop: ClassVar[bool] = True
    curves: ClassVar[bool] = True              #: validation curves in calibration.json (accuracy-shaped)
    #: what "accuracy" counts for this task's answers, where a table names it in words (compare)
    accuracy_name: ClassVar[str] = "accuracy"
    #: the headline figure is a rate over examples (shown as a percentage; a lead is a count of examples a paired
    #: test can bound); else a statistic of the whole split (Pearson's r), shown x 100 as GLUE does
    figure_is_rate: ClassVar[bool] = True
    #: the thresholds are chosen on the headline metric and the report leads with it, so --metric cannot name
    #: another (a tagger's entity F1); else --metric picks the headline
    fixed_headline: ClassVar[bool] = False
    #: a report table's figure columns: (header, row key, "pct" or "num")
    columns: ClassVar[tuple[tuple[str, str, str], ...]] = (
        ("acc %", "accuracy", "pct"), ("macro-F1 %", "macro_f1", "pct"), ("agree %", "agreement", "pct"))

    @property
    def name(self) -> str:
        """The registered name (``@TASKS.register``), as recipes, records and components' ``tasks`` say it."""
        return self.registry_name

    # -- shapes and answers ---------------------------------------------------------------------------
    def outputs(self, num_labels: int) -> int:
        """Values an exit head outputs per answer for a checkpoint with ``num_labels`` labels."""
        return num_labels

    def answers(self, logits: torch.Tensor) -> torch.Tensor:
        """What the model answers from logits [..., C]."""
        return logits.argmax(-1)

    def same(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Whether two answers agree, per example."""
        return a == b

    # -- targets ----------------------------------------------------------------------------------------
    def gold(self, labels: list, label2id: dict, num_labels: int, source: str) -> torch.Tensor:
        """A batch of gold labels as the model's targets (names or ids as its config has them)."""
        from ..data import map_labels

        return torch.tensor(map_labels(labels, label2id, num_labels, source), dtype=torch.long)

    def targets(self, deployed_logits: torch.Tensor) -> torch.Tensor:
        """Training targets from the deployed model's own outputs (no labels)."""
        return self.answers(deployed_logits)

    # -- scoring ----------------------------------------------------------------------------------------
    def correctness(self, logits: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, float]:
        """[N, K] per-example figure at every exit that the calibration search adds up (1 = right),
        and the scale it was divided by (1 here)."""
        return self.same(self.answers(logits), reference[:, None]).double(), 1.0

    def right(self, logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """[N, K] whether each exit's answer counts as right (the oracle leaves at the first)."""
        return self.same(self.answers(logits), reference[:, None])

    def reference_correct(self, correct: torch.Tensor, deployed_pred: torch.Tensor, reference: torch.Tensor,
                          shipped_apart: bool) -> torch.Tensor:
        """The shipped model's per-example figure: its own column, or its own answers when the last exit is
        not the shipped model (gates, a trained or quantized backbone)."""
        return self.same(deployed_pred, reference).double() if shipped_apart else correct[:, -1]

    def report_metric(self, labelled: bool) -> str:
        """The figure a benchmark report reads first: accuracy, or agreement without labels."""
        return "accuracy" if labelled else "agreement"

    def row(self, pred: torch.Tensor, labels: torch.Tensor | None, deployed_pred: torch.Tensor) -> dict:
        """A benchmark row's figures for answers ``pred``."""
        row = {"accuracy": _rate(pred, labels, self.same), "agreement": _rate(pred, deployed_pred, self.same)}
        for name in self.metrics:
            key = name.replace("-", "_")
            if key not in row:
                row[key] = None if labels is None else METRICS.get(name).fn(pred, labels)
        return row

    # -- calibration hooks (certified_drop tasks use the defaults) --------------------------------------
    def tolerance(self, correct: torch.Tensor) -> float | None:
        """A gap treated as a tie when picking the point nearest the target; None = the search's own."""
        return None

    def budget_goal(self, ref: float, max_drop: float) -> float:
        """Goal on the search's figure for ``--max-drop`` when the drop is not certified."""
        raise NotImplementedError

    def relabel(self, cal, figure: str, pred: torch.Tensor, outputs, scale: float):
        """The calibration record named in the task's own units (identity here)."""
        return cal

    # -- metrics ----------------------------------------------------------------------------------------
    def choose_metric(self, name: str | None = None, flag: str = "--metric") -> str:
        """The headline metric: ``name`` (given by ``flag``) if the task reports it and lets it lead, else the
        task's first; a name it cannot take is refused in one line, never ignored."""
        if not name:
            return self.metrics[0]
        METRICS.get(name)  # an unknown name: one line with the closest
        if name not in self.metrics:
            raise EebertError(f"metric {name!r} is not reported for {self.name} models",
                              f"use one of: {', '.join(self.metrics)}")
        if self.fixed_headline and name != self.metrics[0]:
            raise EebertError(f"a {self.name} model's thresholds are chosen on {self.metrics[0]} and its report "
                              f"leads with it; {flag} {name} cannot take its place",
                              f"drop {flag} ({name} is reported beside it)")
        return name

    def metric_values(self, pred: torch.Tensor, ref: torch.Tensor | None) -> dict[str, float | None]:
        """Every metric of the task (keys use underscores: macro_f1); None without a reference."""
        return {n.replace("-", "_"): (None if ref is None else METRICS.get(n).fn(pred, ref)) for n in self.metrics}

    def format(self, value: float) -> str:
        """A figure of this task as people read it (percent for rates)."""
        return f"{100 * value:.2f}%"

    # -- what predict and serve return ------------------------------------------------------------------
    def predictions(self, logits: torch.Tensor, exit_layers: list[int], id2label: dict[int, str]) -> list[Prediction]:
        """Logits [B, C] and each row's 1-based exit layer -> one Prediction per row."""
        out = []
        for p, layer in zip(torch.softmax(logits.float(), -1), exit_layers):
            i = int(p.argmax())
            out.append(Prediction(id2label[i], i, layer, [round(float(x), 6) for x in p]))
        return out

    # -- methods that assume one label per example ------------------------------------------------------
    def check_methods(self, objective: type, exits: str, gates: str | None) -> None:
        """Methods the task cannot use fail now, before the backbone pass (``objective``: its class)."""
        if self.name not in getattr(objective, "tasks", ()):
            raise EebertError(f"objective {objective.registry_name!r} does not serve {self.name} models",
                              f"use --objective {self.objective} (the default for {self.name} models)")
        if exits == "leco" and not self.leco:
            raise EebertError(f"LECO's exit search trains with single-label cross-entropy; this model is {self.name}",
                              "choose the exit heads yourself, e.g. --exits mean-mlp")
        if gates and not self.gates:
            raise EebertError("skipping gates support single-label classifiers only",
                              f"drop the gates for this {self.name} model")

    def check_criterion(self, criterion) -> None:
        tasks = getattr(type(criterion), "tasks", ())
        if self.name not in tasks:
            raise EebertError(f"criterion {criterion.registry_name!r} is for {' / '.join(tasks)}, this model does "
                              f"{self.name}", f"use --criterion {self.criterion}")


TASKS: Registry[type[Task]] = Registry("task")
