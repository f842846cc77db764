"""What attach is asked to do: which exits, and how they are trained.

Light on purpose (no torch): the CLI builds its flags from these before any model code loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.checks import MAX_THREADS
from ..gates.config import GateConfig


@dataclass
class TrainConfig:
    """How the exits are fitted."""

    epochs: int = field(default=30, metadata={"help": "Passes over the cached training features.", "min": 1})
    lr: float = field(default=4e-3, metadata={"help": "AdamW learning rate for the exits.", "min": 0.0, "min_open": True})
    batch_size: int = field(default=256, metadata={"help": "Examples per optimisation step.", "min": 1})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay.", "min": 0.0})
    holdout: float = field(default=0.1, metadata={"help": "Share of training data held out to pick the best epoch.", "min": 0.0, "max": 1.0, "max_open": True})
    patience: int = field(default=5, metadata={"help": "Stop after this many epochs without held-out improvement.", "min": 1})
    seed: int = field(default=0, metadata={"help": "Seed for initialisation and shuffling."})
    contrastive: float = field(default=0.0, metadata={"help": "Weight of SmartBERT's cross-layer contrastive term, added to any objective (0 = off; 0.01-0.05 typical).", "min": 0.0})
    threads: int = field(default=-1, metadata={"help": "torch threads for exit training on the CPU: -1 = by head (one for heads that read a pooled vector, whose steps are small matrix products where more threads mostly wait on each other; torch's default for heads that read every token, whose steps are large), 0 = torch's default, N = N.", "min": -1, "max": MAX_THREADS, "range_hint": "-1 (the default) picks by head"})
    contrastive_temperature: float = field(default=0.5, metadata={"help": "Temperature of the contrastive term.", "min": 0.0, "min_open": True})


@dataclass
class AttachConfig:
    """Which exits to attach and how to train them."""

    exits: str = field(default="mean-mlp", metadata={"help": "Exit head type (see `eebert list`), or 'leco' to search one per layer."})
    layers: list[int] = field(default_factory=list, metadata={"help": "1-based layers to put exits after; empty = every layer but the last."})
    exit_params: dict[str, Any] = field(default_factory=dict, metadata={"flag": "--exit-param", "help": "Extra parameters of the exit head."})
    bypass: dict[str, Any] = field(default_factory=dict, metadata={"help": "Block-wise bypasses (BADGE), e.g. {type = \"badge\", block_size = 2}; empty = none."})
    gates: GateConfig = field(default_factory=GateConfig)
    objective: str = field(default="ce-distil", metadata={"help": "Training objective (see `eebert list`)."})
    objective_params: dict[str, Any] = field(default_factory=dict, metadata={"flag": "--objective-param", "help": "Extra parameters of the objective."})
    max_length: int | None = field(default=None, metadata={"help": "Tokens kept per example (longer ones are truncated), 2 up to the checkpoint's positions; default 128, or the checkpoint's limit if smaller.", "min": 2})
    use_labels: bool = field(default=True, metadata={"flag": "--no-labels", "help": "Train on gold labels when the data has them; else on the deployed model's predictions."})
    batch_size: int = field(default=64, metadata={"help": "Batch size of the one backbone pass that caches features.", "min": 1})
    feature_cache: str = field(default="", metadata={"help": "Folder for the backbone pass's features (memory-mapped, resumable), kept after the run; empty = beside the artifact, removed once it is written."})
    train: TrainConfig = field(default_factory=TrainConfig)
