"""A recipe's ``[expect]`` table: the budget a run must meet, checked after the benchmark.

CI runs ``eebert run recipe.toml``; when a new checkpoint no longer meets the
budget the command exits 3 (errors exit 1) and names each failed expectation.
Percent-like figures are in points (0-100) as everywhere in eebert.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from ..core.errors import EebertError
from ..scoring.config import check_within_ceiling

#: exit status of a run whose expectations failed (1 = an error, 0 = all met)
EXPECTATIONS_FAILED = 3


@dataclass
class Expect:
    """What the benchmark must show; unset entries are not checked."""

    min_flops_speedup: float | None = field(default=None, metadata={"help": "Lowest FLOPs speedup on the benchmark split.", "min": 0.0})
    min_measured_speedup: float | None = field(default=None, metadata={"help": "Lowest measured wall-clock speedup (needs timing: benchmark.repeats > 0).", "min": 0.0})
    max_accuracy_drop: float | None = field(default=None, metadata={"help": "Largest drop of the report's metric vs the deployed model, in points: accuracy (Pearson for regression, entity F1 for a tagger), or agreement without labels.", "min": 0.0, "max": 100.0})
    min_agreement: float | None = field(default=None, metadata={"help": "Lowest agreement with the deployed model's predictions, in percent.", "min": 0.0, "max": 100.0})
    max_speedup_gap: float | None = field(default=None, metadata={"help": "Largest |test / validation - 1| of the FLOPs speedup, in percent (is the calibration holding on unseen data?).", "min": 0.0})

    def any(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    def check(self, repeats: int, where: str) -> None:
        """An expectation the run cannot measure fails every run: refused when the recipe loads."""
        if self.min_measured_speedup is not None and repeats == 0:
            raise EebertError(f"{where}: expect.min_measured_speedup needs a timed benchmark; benchmark.repeats is 0",
                              "set benchmark.repeats (e.g. 5), or drop expect.min_measured_speedup")

    def check_reach(self, num_layers: int, exit_layers: list[int], gated: bool = False) -> None:
        """An expected FLOPs speedup no calibration passes (``speedup_ceiling``) fails every run: refused."""
        if self.min_flops_speedup is not None:
            check_within_ceiling(self.min_flops_speedup, "expect.min_flops_speedup", num_layers, exit_layers, gated)


def _measured(report: dict) -> dict[str, float | None]:
    """Each expectation's figure in ``report`` (None when the run did not measure it)."""
    ee, dep, m = report.get("early_exit", {}), report.get("deployed", {}), report.get("metric")
    gap = (report.get("gaps") or {}).get("test_vs_validation_speedup")
    drop = None
    if m and higher_is_better(m) and ee.get(m) is not None and dep.get(m) is not None:
        drop = 100.0 * (dep[m] - ee[m])  # a lower-is-better figure (an MSE) has no drop in points: not measured
    return {
        "min_flops_speedup": ee.get("speedup_flops"),
        "min_measured_speedup": ee.get("speedup_measured"),
        "max_accuracy_drop": drop,
        "min_agreement": None if ee.get("agreement") is None else 100.0 * ee["agreement"],
        "max_speedup_gap": None if gap is None else 100.0 * abs(gap),
    }


def higher_is_better(metric: str) -> bool:
    """Whether a report's metric (``entity_f1``, ``agreement``, ...) grows with quality."""
    from ..tasks.metrics import METRICS

    name = metric.replace("_", "-")
    return metric == "agreement" or (name in METRICS.names() and METRICS.get(name).higher_is_better)


def check(expect: Expect, report: dict) -> dict:
    """The verdict: {"passed": bool, "checks": [{name, expected, actual, passed}, ...]}."""
    actual = _measured(report)
    checks = []
    for f in fields(expect):
        want = getattr(expect, f.name)
        if want is None:
            continue
        got = actual[f.name]
        ok = got is not None and (got >= want if f.name.startswith("min_") else got <= want)
        checks.append({"name": f.name, "expected": want, "actual": got, "passed": ok})
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def table(verdict: dict):
    """The verdict as a rich table (failed rows in red)."""
    from rich.table import Table

    t = Table("expectation", "expected", "measured", "", title="expectations")
    for c in verdict["checks"]:
        sign = ">=" if c["name"].startswith("min_") else "<="
        got = "not measured" if c["actual"] is None else f"{c['actual']:.3f}"
        t.add_row(c["name"], f"{sign} {c['expected']}", got, "[green]met[/]" if c["passed"] else "[bold red]FAILED[/]")
    return t
