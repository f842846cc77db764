"""The objective contract: all exits' logits for a batch -> one loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from ..registry import Registry


@dataclass
class TrainBatch:
    targets: torch.Tensor   #: class ids: gold labels, or the deployed model's predictions
    teacher: torch.Tensor   #: the deployed model's logits


class Objective(nn.Module):
    """An nn.Module so objectives with learned parts (loss weights) train with the exits."""

    registry_name: ClassVar[str]

    def forward(self, exit_logits: list[torch.Tensor], batch: TrainBatch) -> torch.Tensor:
        raise NotImplementedError

    def report(self) -> dict[str, Any]:
        """Anything learned worth reporting (for instance loss weights)."""
        return {}


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def build_objective(name: str, params: dict[str, Any] | None = None) -> Objective:
    from ..errors import EebertError

    try:
        return OBJECTIVES.get(name)(**(params or {}))
    except TypeError as e:
        raise EebertError(f"bad parameters for objective {name!r}: {e}",
                          "see `eebert list` for each objective's parameters") from None
