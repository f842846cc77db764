"""What calibration and the benchmark are asked to do: their config dataclasses.

Light on purpose (no torch): the CLI builds its flags from these before any model code loads. Choices
that a registry holds are functions, read when a value is checked (``core.checks.check_metadata``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..core.checks import MAX_THREADS
from ..core.errors import EebertError


def _path_runners() -> tuple[str, ...]:
    from .latency import PATH_RUNNERS
    return tuple(PATH_RUNNERS)


def _metrics() -> tuple[str, ...]:
    from ..tasks.metrics import METRICS
    return ("", *METRICS.names())


def _runtimes() -> tuple[str, ...]:
    from ..deploy.runtimes import RUNTIMES
    return tuple(RUNTIMES.names())


def _ort_pools() -> tuple[str, ...]:
    from ..deploy.onnx_runtime import ORT_POOLS
    return ORT_POOLS


#: what a speedup counts (``CalibrationConfig.cost``): the FLOPs model (model/cost.py) or the latency model
#: timed on the calibration device (scoring/latency.py)
COSTS = ("flops", "latency")


@dataclass
class CalibrationConfig:
    """What the thresholds must achieve."""

    criterion: str = field(default="entropy", metadata={"help": "Exit criterion (see `eebert list`)."})
    criterion_params: dict[str, object] = field(default_factory=dict, metadata={"flag": "--criterion-param", "help": "Criterion parameters; ones left unset that the criterion lists in its grid are searched."})
    target_speedup: float | None = field(default=None, metadata={"help": "Expected FLOPs speedup to reach, e.g. 2.0.", "min": 1.0, "min_open": True, "range_hint": "for example 2.0"})
    max_drop: float | None = field(default=None, metadata={"help": "Largest accuracy drop (points, 0-100) allowed vs the deployed model; kept on a lower confidence bound (see drop_confidence).", "min": 0.0, "max": 100.0, "range_hint": "for example 1.0 (accuracy points)"})
    drop_confidence: float = field(default=0.9, metadata={"help": "With max_drop: probability that the drop on an unseen split of the validation's size stays within it (z*SE margin).", "min": 0.5, "max": 1.0, "max_open": True})
    unlabeled: str | None = field(default=None, metadata={"help": "With max_drop: a data file of unlabeled rows (production traffic; not the texts the exits were trained on) scored by the deployed model; the drop is then bounded by the disagreement with the deployed model over validation + these rows, which needs no labels (see docs/criteria.md)."})
    per_layer: bool = field(default=True, metadata={"flag": "--global-threshold", "help": "Refine one threshold per exit after the global sweep."})
    bootstrap: int = field(default=200, metadata={"help": "Bootstrap resamples for confidence intervals.", "min": 1})
    precision: float = field(default=2.0, metadata={"flag": None, "help": "Warn when the 95% interval of validation accuracy (a tagger: entity F1) is wider than +/- this many points.", "min": 0.0, "min_open": True})
    gate_thresholds: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.9, 1.0], metadata={"flag": "--gate-threshold", "help": "Skip-probability thresholds tried for artifacts with skipping gates (0.5 as trained; 1.0 = never skip); the best at the target is kept.", "min": 0.0, "max": 1.0, "min_open": True})
    tolerance: float | None = field(default=None, metadata={"flag": None, "help": "Accuracy gap (0-1) treated as a tie when choosing the point nearest the target; default half a standard error.", "min": 0.0, "max": 1.0})
    latency_runtime: str | None = field(default=None, metadata={"help": "With cost 'latency': the loop that is timed, 'pytorch' (on the calibration device) or 'onnxruntime' (the artifact exported with every exit live to a temporary folder, int8 graphs with --quantize int8; CPU); default: the runtime the thresholds are chosen on (`runtime`).", "choices": _path_runners})
    runtime: str = field(default="pytorch", metadata={"help": "Whose outputs the thresholds are chosen on: 'pytorch' (the PyTorch loop, simulated in batches) or 'onnxruntime' (the artifact exported with every exit live to a temporary folder, int8 graphs with --quantize int8, and every validation example run through it at batch size 1 on the CPU): the operating point then holds for that runtime's own answers (ONNX Runtime's int8 kernels round differently from PyTorch's, so a PyTorch-chosen point moves there).", "choices": _runtimes})
    cost: str = field(default="flops", metadata={"help": "What a speedup counts: 'flops' (the FLOPs model, the same on every machine) or 'latency' (the batch-1 loop timed on this device, an exit's own cost included; with --target-speedup, exits that do not pay for themselves are switched off).", "choices": list(COSTS)})
    prune_exits: bool = field(default=True, metadata={"flag": "--keep-exits", "help": "With a criterion that scores each exit alone: switch off exits that add nothing (the runtime and the ONNX export then skip them: one exit head and, on ONNX Runtime, one session call less for every example that passes). With --target-speedup, exits that add no validation accuracy at the target; with --max-drop, exits whose removal keeps the speedup found within the budget. Under --cost latency, exits that do not pay for their time."})
    prune_within_noise: bool = field(default=False, metadata={"help": "With --target-speedup and prune_exits: also switch off exits whose removal costs validation accuracy within noise (the tolerance of the tie rule: half a standard error, or `tolerance`) of the accuracy with every exit on, fewest exits evaluated per example first. A noise-sized accuracy change for fewer exit heads and, on ONNX Runtime, fewer session calls per example, which the FLOPs target does not see and every engine's clock does."})

    def check_reach(self, num_layers: int, exit_layers: list[int], gated: bool = False) -> None:
        """A target no exit can reach (``speedup_ceiling``), refused before any pass. `calibrate` asks it of the
        artifact, `validate` of the recipe's checkpoint."""
        if self.target_speedup is not None:
            check_within_ceiling(self.target_speedup, "target speedup", num_layers, exit_layers, gated)


def speedup_ceiling(num_layers: int, exit_layers: list[int], gated: bool = False) -> float | None:
    """A bound no FLOPs speedup passes: every example leaving at the first exit costs at least that exit's
    layers, so the speedup stays under (layers + 1) / first exit layer (the one allows for the deployed head;
    the search finds the exact ceiling). Skipping gates run fewer layers than that: no bound (None)."""
    return None if gated or not exit_layers else (num_layers + 1) / min(exit_layers)


def check_within_ceiling(speedup: float, what: str, num_layers: int, exit_layers: list[int],
                         gated: bool = False) -> None:
    """``what`` (a target, an expectation) asking for a FLOPs speedup above ``speedup_ceiling``: one line."""
    ceiling = speedup_ceiling(num_layers, exit_layers, gated)
    if ceiling is not None and speedup > ceiling:
        first = min(exit_layers)
        raise EebertError(f"{what} {speedup:g}x is out of reach: with the first exit after layer {first} of "
                          f"{num_layers}, no calibration passes about {num_layers / first:.1f}x",
                          "ask for less, or attach an exit after an earlier layer")


#: splits eebert has fitted something on: a benchmark there is allowed (a check against the validation
#: estimate) but flatters early exit, and the report says so
SEEN_SPLITS = {"train": "the exits were trained on it", "validation": "the thresholds were chosen on it"}


@dataclass
class BenchmarkConfig:
    """How the benchmark measures."""

    split: str = field(default="test", metadata={"help": "Split to benchmark on.", "choices": ("train", "validation", "test")})
    timing_samples: int = field(default=500, metadata={"help": "Examples timed one by one at batch size 1 (seeded subset; 0 = all).", "min": 0})
    repeats: int = field(default=5, metadata={"help": "Timed runs per example; the median counts (0 = no timing).", "min": 0})
    warmup: int = field(default=20, metadata={"help": "Untimed warm-up examples.", "min": 0})
    threads: int = field(default=0, metadata={"help": "torch threads for timing (0 = torch's default).", "min": 0, "max": MAX_THREADS, "range_hint": "0 (the default) is torch's own count"})
    batch_size: int = field(default=64, metadata={"help": "Batch size of the pass that scores accuracy and FLOPs.", "min": 1})
    metric: str = field(default="", metadata={"help": "Headline metric, one the task reports (classification: accuracy, macro-f1; multi-label: micro-f1, accuracy, macro-f1; regression: pearson, spearman, mse; a tagger: entity-f1); default: the task's first.", "choices": _metrics})
    timing_batch_size: int = field(default=1, metadata={"flag": "--batch-size", "help": "Batch size for wall-clock timing (> 1: per-sample exits vs whole-batch exiting vs deployed).", "min": 1})
    runtime: str = field(default="pytorch", metadata={"help": "Runtime to time: pytorch or onnxruntime (needs `eebert export` first); see runtimes.py.", "choices": _runtimes})
    onnx_dir: str = field(default="", metadata={"flag": "--onnx", "help": "ONNX export to time with --runtime onnxruntime (default ARTIFACT/onnx)."})
    ort_pool: str = field(default="per-session", metadata={"help": "ONNX Runtime's threads: per-session (pools that do not spin; safe on shared cores) or shared (one spinning pool, ORT's own default; faster at batch 1 on cores nothing else uses).", "choices": _ort_pools})

    #: keys from before the rename, read as the new ones (``engine`` meant the runtime here)
    RENAMED: ClassVar[dict[str, str]] = {"engine": "runtime"}
