"""Single-label classification: one class per example (softmax); the base class's semantics."""

from __future__ import annotations

from .base import TASKS, Task


@TASKS.register("classification")
class Classification(Task):
    """argmax answers, accuracy / agreement per example, macro-F1 reported."""
