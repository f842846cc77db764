"""calibration.json, owned by one dataclass: what `eebert calibrate` chose and how well it should hold.

Written once, atomically, by :meth:`Calibration.save`; read back by
:meth:`Calibration.load`. A loaded artifact reads it once, checked against its exits
(``Artifact.calibration``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..core.atomic import read_json, write_json
from ..core.errors import EebertError

FORMAT_VERSION = 1
FILE = "calibration.json"
#: how every confidence interval in a calibration is made; shown wherever one is
CI_METHOD = "95% bootstrap percentile interval at the chosen thresholds (the search is not re-run per resample)"


INF = float("inf")


def skipped_exits(thresholds, stateless: bool) -> frozenset[int]:
    """Exits the runtime never evaluates (and an ONNX export leaves out): those set to "never" under a
    stateless criterion, which cannot fire and feed nothing later. A stateful criterion (patience) sees
    every exit. The one rule the runtime, the export and the FLOPs figures share."""
    return frozenset(k for k, t in enumerate(thresholds) if stateless and float(t) == -INF)


def thresholds_from_json(values: list) -> list[float]:
    """calibration.json's thresholds: numbers, or "never" / "always" for -inf / +inf."""
    return [{"never": -INF, "always": INF}.get(v, v) if isinstance(v, str) else float(v) for v in values]


def _is_threshold(v) -> bool:
    """What calibration.json may hold for one exit (``thresholds_to_json`` writes nothing else)."""
    if isinstance(v, str):
        return v in ("never", "always")
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def thresholds_to_json(values) -> list:
    return ["never" if v == -INF else "always" if v == INF else float(v) for v in values]


@dataclass
class Calibration:
    """The operating point chosen on validation data, and its estimate there."""

    criterion: str = field(metadata={"help": "Exit criterion (registry name)."})
    thresholds: list = field(metadata={"help": "One threshold per trainable exit; 'never' / 'always' for -inf / +inf."})
    criterion_params: dict[str, Any] = field(default_factory=dict, metadata={"help": "Criterion parameters chosen (grid search included)."})
    mode: str = field(default="target_speedup", metadata={"help": "'target_speedup' or 'max_drop'."})
    target_speedup: float | None = field(default=None, metadata={"help": "Asked speedup, if that mode: FLOPs, or the latency model's (see `cost`)."})
    max_drop: float | None = field(default=None, metadata={"help": "Asked largest accuracy drop in points, if that mode."})
    per_layer: bool = field(default=True, metadata={"help": "Whether thresholds were refined per exit."})
    metric: str = field(default="accuracy", metadata={"help": "Name of the validation figure the search used."})
    headline_metric: str | None = field(default=None, metadata={"help": "Metric to read first (task default or --metric)."})
    task: str = field(default="classification", metadata={"help": "'classification' or 'regression'."})
    exit_layers: list[int] = field(default_factory=list, metadata={"help": "1-based exit layers, the deployed head last."})
    quantize: str | None = field(default=None, metadata={"help": "Backbone quantization the thresholds were chosen on (int8), if any."})
    runtime: str | None = field(default=None, metadata={"help": "Runtime whose outputs the thresholds were chosen on, if not PyTorch's (onnxruntime: one example at a time through its graphs)."})
    placement: dict[str, str] | None = field(default=None, metadata={"help": "Device and backbone dtype the validation pass ran in."})
    gate_threshold: float | None = field(default=None, metadata={"help": "Chosen skip-probability threshold of the gates, if any."})
    validation: dict[str, Any] = field(default_factory=dict, metadata={"help": "Estimate on validation at the chosen point, with CIs."})
    ci_method: str = field(default=CI_METHOD, metadata={"help": "How the validation intervals were made."})
    margin: dict[str, Any] | None = field(default=None, metadata={"help": "--max-drop: the safety margin the constraint used (method, confidence, points)."})
    grid: list[dict] | None = field(default=None, metadata={"help": "Every (criterion params, gate threshold) tried and its validation point."})
    gate_grid: list[dict] | None = field(default=None, metadata={"help": "Best point per gate threshold tried."})
    token_exit: dict[str, Any] | None = field(default=None, metadata={"help": "Taggers: the per-token exit's threshold (mode 'per-token'), chosen by `calibrate --token-exit`."})
    curve: list[dict] = field(default_factory=list, metadata={"help": "Global-threshold sweep of the chosen criterion on validation."})
    curves: dict[str, Any] | None = field(default=None, metadata={"help": "Validation curves of every criterion, static truncation and the oracle."})
    warnings: list[str] = field(default_factory=list, metadata={"help": "Things the reader should know (small validation split, ...)."})
    cost: dict[str, Any] | None = field(default=None, metadata={"help": "With `--cost latency`: the measured latency profile and what the figures count; absent: FLOPs."})
    search_seconds: float = field(default=0.0, metadata={"help": "Time the threshold search took."})
    derived_from: dict[str, Any] = field(default_factory=dict, metadata={"help": "What this calibration was made from (hashes of the inputs)."})
    format_version: int = field(default=FORMAT_VERSION, metadata={"help": "calibration.json format version."})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = FILE) -> "Calibration":
        if not isinstance(d, dict):
            raise EebertError(f"{source} is not a JSON object", "re-run `eebert calibrate`")
        d = dict(d)
        version = d.setdefault("format_version", FORMAT_VERSION)  # files from before versioning read as v1
        if version != FORMAT_VERSION:
            raise EebertError(f"{source} has calibration format {version}, this eebert reads {FORMAT_VERSION}",
                              "re-run `eebert calibrate`")
        known = {f.name for f in fields(cls)}
        if "criterion" not in d or "thresholds" not in d:
            raise EebertError(f"{source} names no criterion or thresholds", "re-run `eebert calibrate`")
        bad = [t for t in d["thresholds"] if not _is_threshold(t)] if isinstance(d["thresholds"], list) else [None]
        if not isinstance(d["criterion"], str) or bad:
            raise EebertError(f"{source}: thresholds must be a list of finite numbers, \"never\" or \"always\" "
                              f"and the criterion a name" + (f" (got {bad[0]!r})" if bad and bad[0] is not None else ""),
                              "re-run `eebert calibrate` (the file was edited or written by another tool)")
        return cls(**{k: v for k, v in d.items() if k in known})

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/calibration.json`` atomically (temp sibling + rename)."""
        path = Path(folder) / FILE
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "Calibration | None":
        path = Path(folder) / FILE
        return cls.from_dict(read_json(path), str(path)) if path.exists() else None

    def summary(self) -> dict:
        """The record without its curves (what `--json` prints)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("curve", "curves")}


def calibrated_token_threshold(folder: str | Path) -> tuple[float, str]:
    """The per-token threshold ``calibrate --token-exit`` recorded and its criterion, read from
    calibration.json alone."""
    cal = Calibration.load(folder)
    if cal is None or not cal.token_exit:
        raise EebertError(f"{folder} has no per-token calibration",
                          f"run `eebert calibrate {folder} --token-exit --target-speedup X`, or give --token-threshold P")
    return float(cal.token_exit["threshold"]), cal.token_exit.get("criterion", "token-maxprob")
