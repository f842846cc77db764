"""The knobs of SmartBERT skipping gates: their shape, and how they are trained."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GateConfig:
    """Skipping gates before encoder layers (SmartBERT). ``type = ""`` means no gates."""

    type: str = field(default="", metadata={"flag": "--gates", "help": "Gate kind: 'smartbert', or empty for none."})
    layers: list[int] = field(default_factory=list, metadata={"help": "1-based layers that may be skipped; empty = every layer but the first."})
    width: int = field(default=0, metadata={"help": "Hidden width of each gate's MLP (0 = hidden size / 8).", "min": 0})
    source: str = field(default="cls", metadata={"help": "What a gate reads of the states entering its layer: 'cls' or 'mean'.", "choices": ("cls", "mean")})
    skip_target: float = field(default=0.25, metadata={"help": "Share of gated layers to skip on average; the skip penalty pulls the skip rate here (it keeps gates from never or always skipping).", "min": 0.0, "max": 1.0})
    skip_weight: float = field(default=1.0, metadata={"help": "Weight of the skip penalty (rate - target)^2 against the exits' loss.", "min": 0.0})
    epochs: int = field(default=3, metadata={"help": "Passes over the gate-training examples (backbone in the loop).", "min": 1})
    warmup_epochs: int = field(default=1, metadata={"help": "Epochs of soft mixing before hard (straight-through 0/1) gate weights.", "min": 0})
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate of the gates.", "min": 0.0, "min_open": True})
    exit_lr: float = field(default=1e-4, metadata={"help": "Learning rate of the exits while they adapt to skipped layers (0 = keep them fixed).", "min": 0.0})
    train_backbone: bool = field(default=False, metadata={"help": "Also train the backbone (for users who can retrain): the artifact then carries the new backbone weights."})
    backbone_lr: float = field(default=2e-5, metadata={"help": "Learning rate of the backbone with train_backbone.", "min": 0.0, "min_open": True})
    max_examples: int = field(default=2000, metadata={"help": "Training examples the gate stage uses (a seeded sample; 0 = all): each step runs the backbone.", "min": 0})
    batch_size: int = field(default=32, metadata={"help": "Examples per gate-training step.", "min": 1})
    init_bias: float = field(default=-2.0, metadata={"help": "Initial gate logit bias (-2: skip probability 0.12, i.e. start by running every layer)."})

    #: fields that shape the module (saved in the exit spec); the rest only steer training
    SHAPE = ("width", "source", "init_bias")

    def spec(self, num_layers: int) -> dict:
        layers = sorted(set(self.layers)) if self.layers else list(range(2, num_layers + 1))
        return {"type": self.type, "layers": layers, **{k: getattr(self, k) for k in self.SHAPE}}
