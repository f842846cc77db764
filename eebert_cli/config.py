"""Configs of each step as small dataclasses, documented where they stand.

Field ``metadata["help"]`` feeds the CLI help; recipes are parsed into the same
dataclasses by :func:`from_dict`, which rejects unknown keys by name.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from .checks import check_metadata, check_type, closest
from .errors import EebertError
from .gates import GateConfig
from .train import TrainConfig


@dataclass
class AttachConfig:
    """Which exits to attach and how to train them."""

    exits: str = field(default="mean-mlp", metadata={"help": "Exit head type (see `eebert list`), or 'leco' to search one per layer."})
    layers: list[int] = field(default_factory=list, metadata={"help": "1-based layers to put exits after; empty = every layer but the last."})
    exit_params: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra parameters of the exit head."})
    bypass: dict[str, Any] = field(default_factory=dict, metadata={"help": "Block-wise bypasses (BADGE), e.g. {type = \"badge\", block_size = 2}; empty = none."})
    gates: GateConfig = field(default_factory=GateConfig)
    objective: str = field(default="ce-distil", metadata={"help": "Training objective (see `eebert list`)."})
    objective_params: dict[str, Any] = field(default_factory=dict, metadata={"help": "Extra parameters of the objective."})
    max_length: int | None = field(default=None, metadata={"help": "Tokens kept per example (longer ones are truncated), 2 up to the checkpoint's positions; default 128, or the checkpoint's limit if smaller.", "min": 2})
    use_labels: bool = field(default=True, metadata={"help": "Train on gold labels when the data has them; else on the deployed model's predictions."})
    batch_size: int = field(default=64, metadata={"help": "Batch size of the one backbone pass that caches features.", "min": 1})
    feature_cache: str = field(default="", metadata={"help": "Folder for the backbone pass's features (memory-mapped, resumable), kept after the run; empty = beside the artifact, removed once it is written."})
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class BenchmarkConfig:
    """How the benchmark measures."""

    split: str = field(default="test", metadata={"help": "Split to benchmark on.", "choices": ("train", "validation", "test")})
    timing_samples: int = field(default=500, metadata={"help": "Examples timed one by one at batch size 1 (seeded subset; 0 = all).", "min": 0})
    repeats: int = field(default=5, metadata={"help": "Timed runs per example; the median counts (0 = no timing).", "min": 0})
    warmup: int = field(default=20, metadata={"help": "Untimed warm-up examples.", "min": 0})
    threads: int = field(default=0, metadata={"help": "torch threads for timing (0 = torch's default).", "min": 0})
    batch_size: int = field(default=64, metadata={"help": "Batch size of the pass that scores accuracy and FLOPs.", "min": 1})
    metric: str = field(default="", metadata={"help": "Headline metric (accuracy, macro-f1, pearson, spearman, mse); default by task: accuracy, or pearson for regression.", "choices": ("", "accuracy", "macro-f1", "pearson", "spearman", "mse")})
    timing_batch_size: int = field(default=1, metadata={"help": "Batch size for wall-clock timing (> 1: per-sample exits vs whole-batch exiting vs deployed).", "min": 1})
    engine: str = field(default="pytorch", metadata={"help": "Engine to time: pytorch or onnxruntime (needs `eebert export` first).", "choices": ("pytorch", "onnxruntime")})
    onnx_dir: str = field(default="", metadata={"help": "ONNX export to time with --engine onnxruntime (default ARTIFACT/onnx)."})


def help_for(cls: type, name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name)


def from_dict(cls: type, data: dict, where: str = "recipe") -> Any:
    """Build dataclass ``cls`` from a dict, strictly: unknown keys and wrong types are errors."""
    if not isinstance(data, dict):
        raise EebertError(f"{where}: expected a table, got {data!r}", "see recipes/quickstart.toml")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise EebertError(f"{where}: unknown key {unknown[0]!r}", closest(unknown[0], fields))
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{where}.{name}")
        else:
            kwargs[name] = check_type(value, tp, f"{where}.{name}")
    obj = cls(**kwargs)
    for f in dataclasses.fields(cls):  # declared ranges and choices (nested tables checked above)
        if not dataclasses.is_dataclass(hints[f.name]):
            check_metadata(getattr(obj, f.name), f.metadata, f"{where}.{f.name}")
    return obj


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)
