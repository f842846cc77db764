"""The exit-criterion contract shared by calibration and inference.

A criterion turns the logits of exit k (and whatever state it keeps from
earlier exits) into a *score*, lower meaning readier to exit. A sample leaves
at the first exit whose score is <= that exit's threshold; the deployed head
(the last exit) always answers. Calibration searches thresholds on scores
computed once for a whole split; inference calls :meth:`step` exit by exit, so
both use the very same arithmetic.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..registry import Registry

State = dict[str, torch.Tensor]


class Criterion:
    registry_name: ClassVar[str]
    #: True when thresholds are whole numbers (patience counts)
    integer: ClassVar[bool] = False

    def __init__(self, **params: Any):
        if params:
            raise TypeError(f"unexpected parameters {sorted(params)}")

    def params(self) -> dict[str, Any]:
        """Constructor parameters, saved with the calibration."""
        return {}

    def init_state(self, batch: int, device: torch.device | None = None) -> State:
        return {}

    def step(self, logits: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Score [B] for this exit's logits [B, C], and the state for the next exit."""
        raise NotImplementedError

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores [N, K] for all exits' logits [N, K, C] (same arithmetic as :meth:`step`)."""
        state = self.init_state(logits.shape[0], logits.device)
        out = []
        for k in range(logits.shape[1]):
            s, state = self.step(logits[:, k], state)
            out.append(s)
        return torch.stack(out, 1)

    def candidates(self, scores: torch.Tensor, n: int = 64) -> torch.Tensor:
        """Threshold candidates for one exit's scores [N]: quantiles, plus never/always."""
        finite = scores[torch.isfinite(scores)].double()
        if self.integer:
            vals = torch.unique(finite)
        elif finite.numel():
            q = torch.linspace(0, 1, n, dtype=torch.float64)
            vals = torch.unique(torch.quantile(finite, q))
        else:
            vals = torch.empty(0, dtype=torch.float64)
        return torch.cat([torch.tensor([-float("inf")], dtype=torch.float64), vals])

    @staticmethod
    def select(state: State, rows: torch.Tensor) -> State:
        """Keep only ``rows`` of every per-sample state tensor (samples leaving a batch)."""
        return {k: v.index_select(0, rows) for k, v in state.items()}


CRITERIA: Registry[type[Criterion]] = Registry("exit criterion")


def build_criterion(name: str, params: dict[str, Any] | None = None) -> Criterion:
    from ..errors import EebertError

    cls = CRITERIA.get(name)
    try:
        return cls(**(params or {}))
    except TypeError as e:
        raise EebertError(f"bad parameters for criterion {name!r}: {e}",
                          "see `eebert list` for each criterion's parameters") from None
