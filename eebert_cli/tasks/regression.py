"""Regression (STS-B style, one output): gold values, the search's figure, the report's units.

Per-example correctness does not exist for a real-valued output, so the
calibration search's per-example figure is the negative squared error to the
reference (gold values, else the deployed model's output), divided by the
largest one so it lies in [-1, 0] like an accuracy's complement. Its mean is
-MSE (scaled), which is additive over examples, so the fast threshold search
works unchanged: ``target_speedup`` finds the lowest validation MSE at the
speedup; ``max_drop`` D allows the MSE to rise by at most D percent over the
deployed model's. Pearson and Spearman (not additive) are evaluated exactly at
the chosen thresholds and reported, Pearson being the headline metric.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from ..core.errors import EebertError
from .base import TASKS, Prediction, Task


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


@TASKS.register("regression")
class Regression(Task):
    """One real-valued output; squared error is the per-example figure."""

    objective = "mse-distil"
    criterion = "patience-regression"
    metrics = ("pearson", "spearman", "mse")
    gates = False
    fitted_criteria = False
    certified_drop = False
    curves = False
    accuracy_name = "Pearson r x 100"
    figure_is_rate = False
    columns = (("pearson", "pearson", "num"), ("spearman", "spearman", "num"), ("MSE", "mse", "num"),
               ("MSE to deployed", "mse_to_deployed", "num"))

    def outputs(self, num_labels: int) -> int:
        return 1

    def answers(self, logits: torch.Tensor) -> torch.Tensor:
        return logits[..., 0]

    def gold(self, labels: list, label2id: dict, num_labels: int, source: str) -> torch.Tensor:
        try:
            return torch.tensor([float(v) for v in labels], dtype=torch.float32)
        except (TypeError, ValueError):
            bad = next(v for v in labels if not _is_number(v))
            raise EebertError(f"label {bad!r} in {source} is not a number, but the model is a regressor (one output)",
                              "give numeric scores in the label column") from None

    def correctness(self, logits: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, float]:
        err = (logits[..., 0].double() - reference.double()[:, None]).square()   # [N, K]
        scale = max(err.max().item(), 1e-12)  # keeps the search's accuracy-shaped bounds; changes no ranking
        return -err / scale, scale

    def right(self, logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """No worse than the deployed head's squared error."""
        err = (logits[..., 0].double() - reference.double()[:, None]).square()
        return err <= err[:, -1:]

    def reference_correct(self, correct, deployed_pred, reference, shipped_apart) -> torch.Tensor:
        return correct[:, -1]

    def report_metric(self, labelled: bool) -> str:
        return "pearson" if labelled else "mse_to_deployed"

    def row(self, pred, labels, deployed_pred) -> dict:
        return {**self.metric_values(pred, labels),
                "mse_to_deployed": (pred.double() - deployed_pred.double()).square().mean().item()}

    def tolerance(self, correct: torch.Tensor) -> float:
        """Half a standard error of the deployed model's validation figure: smaller gaps are noise."""
        err = -correct[:, -1]
        return 0.5 * err.std().item() / math.sqrt(max(len(err), 1)) if len(err) > 1 else 0.0

    def budget_goal(self, ref: float, max_drop: float) -> float:
        """MSE at most D percent above the deployed model's (the figure is -MSE)."""
        return ref * (1 + max_drop / 100.0)

    def relabel(self, cal, figure: str, pred: torch.Tensor, outputs, scale: float):
        """Name the record's figures in MSE: the search ran on scaled -MSE."""
        v = dict(cal.validation)
        neg, dep, ci = scale * v.pop(figure), scale * v.pop(f"deployed_{figure}"), [scale * c for c in v.pop(f"{figure}_ci95")]
        v.pop("agreement", None)
        name = "mse" if outputs.labels is not None else "mse_to_deployed"
        v.update({name: -neg, f"deployed_{name}": -dep, f"{name}_ci95": [-ci[1], -ci[0]],
                  "mse_to_deployed": (pred.double() - outputs.deployed_pred.double()).square().mean().item()})
        curve = [{"threshold": c["threshold"], "speedup": c["speedup"], name: -scale * c["accuracy"]} for c in cal.curve]
        return replace(cal, metric=name, validation=v, curve=curve)

    def format(self, value: float) -> str:
        return f"{value:.4f}"

    def predictions(self, logits, exit_layers, id2label) -> list[Prediction]:
        """The label is the predicted value."""
        return [Prediction(f"{float(v):.6g}", 0, layer, [round(float(v), 6)]) for v, layer in zip(logits[:, 0], exit_layers)]
