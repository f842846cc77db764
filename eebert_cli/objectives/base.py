"""The objective contract: all exits' logits for a batch -> one loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..core.registry import Range, Registry
from ..tasks import CLASSIFICATION


@dataclass
class TrainBatch:
    targets: torch.Tensor   #: class ids: gold labels, or the deployed model's predictions
    teacher: torch.Tensor   #: the deployed model's logits


class Objective(nn.Module):
    """An nn.Module so objectives with learned parts (loss weights) train with the exits."""

    registry_name: ClassVar[str]
    #: True for objectives fitted as a bi-level problem: the trainer then keeps a held-out part
    #: of the training data (``outer_share``) and calls :meth:`outer_step` after each step
    bilevel: ClassVar[bool] = False
    #: tasks the loss is defined for (class targets by default)
    tasks: ClassVar[tuple[str, ...]] = (CLASSIFICATION,)
    #: parameter ranges beyond :data:`eebert_cli.core.registry.COMMON_BOUNDS`, checked by ``OBJECTIVES.build``
    bounds: ClassVar[dict[str, Range]] = {}
    outer_share: float = 0.2

    def bind(self, exits) -> None:
        """Called once by the trainer before training (objectives that need the exits' layout)."""

    def heldout(self, exit_logits: list[torch.Tensor], batch: "TrainBatch") -> torch.Tensor:
        """Loss that picks the best epoch; the training loss unless its scale moves (learned weights)."""
        return self(exit_logits, batch)

    def outer_step(self, exits, inner: tuple, outer: tuple) -> None:
        """Bi-level objectives: update learned loss parts. ``inner``/``outer`` are (getter, TrainBatch)
        of the current training batch and of a batch from the held-out part."""

    def forward(self, exit_logits: list[torch.Tensor], batch: TrainBatch) -> torch.Tensor:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """Anything learned worth reporting (for instance loss weights)."""
        return {}


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def build_objective(name: str, params: dict[str, Any] | None = None, task: str | None = None) -> Objective:
    return OBJECTIVES.build(name, params, task=task)
