"""The exit-criterion contract shared by calibration and inference.

A criterion turns the logits of exit k (and whatever state it keeps from
earlier exits) into a *score*, lower meaning readier to exit. A sample leaves
at the first exit whose score is <= that exit's threshold; the deployed head
(the last exit) always answers. Calibration searches thresholds on scores
computed once for a whole split; inference calls :meth:`step` exit by exit, so
both use the very same arithmetic.

A score may be NaN: "no opinion here" (for instance a divergence at the first
exit, which has nothing to compare with); NaN never satisfies ``<=``, so such
an exit never fires whatever its threshold. Criteria that read more than logits
(a learned exit scorer) set ``needs_features`` and receive the exit's reduced
hidden states, the same tensor its exit head reads; trained criteria load their
weights from the artifact in :meth:`bind`, after :meth:`fit` trained them at attach.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..core.registry import Range, Registry
from ..tasks import CLASSIFICATION

State = dict[str, torch.Tensor]


class Criterion:
    registry_name: ClassVar[str]
    #: True when thresholds are whole numbers (patience counts)
    integer: ClassVar[bool] = False
    #: True when :meth:`step` also reads the exit's reduced hidden states [B, H]
    needs_features: ClassVar[bool] = False
    #: True when words halt one by one (a tagger's per-token exit, ``criteria/token.py``): such a
    #: criterion is calibrated by running the per-token pass, not by the per-example search
    per_token: ClassVar[bool] = False
    #: hyper-parameter values calibration may try when the user sets none (keep it small)
    grid: ClassVar[dict[str, list[Any]]] = {}
    #: tasks whose outputs the criterion reads (class distributions by default)
    tasks: ClassVar[tuple[str, ...]] = (CLASSIFICATION,)
    #: parameter ranges beyond :data:`eebert_cli.core.registry.COMMON_BOUNDS`, checked by ``CRITERIA.build``
    bounds: ClassVar[dict[str, Range]] = {}

    def __init__(self, **params: Any):
        if params:
            raise TypeError(f"unexpected parameters {sorted(params)}")

    def params(self) -> dict[str, Any]:
        """Constructor parameters, saved with the calibration."""
        return {}

    def init_state(self, batch: int, device: torch.device | None = None) -> State:
        return {}

    @property
    def stateless(self) -> bool:
        """Whether an exit's score depends on that exit alone (nothing is carried between exits)."""
        return not self.init_state(1)

    @classmethod
    def fit(cls, exits, features, targets: torch.Tensor, rows: torch.Tensor, reduction: str):
        """Train what this criterion learns at attach, right after the exits (nothing by default).

        ``features`` (a :class:`~eebert_cli.model.features.Features`) holds ``reduction`` at every exit
        layer; ``rows`` are the examples the exits did not train on. Returns None, or
        (tensors to save as ``trained_file`` in the artifact, a JSON-able report) that
        :meth:`bind` reads back.
        """
        return None

    #: artifact file holding what :meth:`fit` trained (criteria that train something)
    trained_file: ClassVar[str | None] = None

    def bind(self, artifact) -> None:
        """Load whatever a trained criterion keeps in the artifact (nothing by default)."""

    def observe(self, logits: torch.Tensor, state: State,
                features: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        """:meth:`step`, handing over the exit's features when the criterion reads them."""
        if self.needs_features:
            return self.step(logits, state, features)
        return self.step(logits, state)

    def step(self, logits: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Score [B] for this exit's logits [B, C], and the state for the next exit."""
        raise NotImplementedError

    def scores(self, logits: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Scores [N, K] for all exits' logits [N, K, C] (same arithmetic as :meth:`step`).

        ``features`` [N, K-1, H]: the trainable exits' reduced hidden states, for
        criteria that need them (the deployed head, exit K-1, has none).
        """
        state = self.init_state(logits.shape[0], logits.device)
        out = []
        for k in range(logits.shape[1]):
            f = features[:, k] if features is not None and k < features.shape[1] else None
            s, state = self.observe(logits[:, k], state, f)
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

#: artifact config key recording each fitted criterion: name -> {"file": ..., report}
FITTED_KEY = "criteria_fitted"


def as_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 for a score's arithmetic, an fp32 tensor as it is: ``.float()`` on one is free in
    eager mode but traces into an exported graph as a Cast node, paid at every exit of every call."""
    return x if x.dtype == torch.float32 else x.float()


def feature_reduction(exit_type: str | None) -> str:
    """The pooled reduction feature-reading criteria read: the exits' own when pooled ([CLS] or mean), else mean."""
    from ..exits import EXITS

    if exit_type and exit_type in EXITS and EXITS.get(exit_type).reduction in ("cls", "mean"):
        return EXITS.get(exit_type).reduction
    return "mean"


def fitted_record(artifact, name: str) -> dict | None:
    """What attach recorded about criterion ``name``'s fit (older artifacts: the ``learned_exit`` key)."""
    rec = (artifact.config.get(FITTED_KEY) or {}).get(name)
    return rec if rec is not None or name != "learned" else artifact.config.get("learned_exit")


def build_criterion(name: str, params: dict[str, Any] | None = None, artifact=None,
                    task: str | None = None) -> Criterion:
    """The named criterion; with ``artifact``, bound to what it trained there (see :meth:`Criterion.bind`)."""
    crit = CRITERIA.build(name, params, task=task)
    if artifact is not None:
        crit.bind(artifact)
    return crit
