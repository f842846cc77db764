"""The task registry: what a checkpoint does, read from its config (see ``base.Task``).

``task_of(config)`` names the task of a transformers config (or the raw config.json
dict); ``get(name)`` returns its :class:`Task`. Components declare the tasks they
serve by name (``tasks = (CLASSIFICATION, ...)``); only this package compares them.
"""

from __future__ import annotations

from ..core.registry import discover
from .base import TASKS, Prediction, Task, prediction_row

#: the registered names, for components' ``tasks`` declarations
CLASSIFICATION, REGRESSION, MULTI_LABEL = "classification", "regression", "multi-label"
TOKEN_CLASSIFICATION = "token-classification"

discover(__name__)
#: every task name (the default of a component that serves them all)
NAMES = tuple(TASKS.names())

_INSTANCES: dict[str, Task] = {}


def get(name: "str | Task | None") -> Task:
    """The task called ``name`` (a Task passes through; None is classification, as records before tasks were)."""
    if isinstance(name, Task):
        return name
    name = name or CLASSIFICATION
    if name not in _INSTANCES:
        _INSTANCES[name] = TASKS.get(name)()
    return _INSTANCES[name]


def task_of(config) -> Task:
    """A ``*ForTokenClassification`` architecture means tagging; one output or problem_type "regression"
    means regression; problem_type "multi_label_classification" a set of labels per example."""
    read = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    if any(str(a).endswith("ForTokenClassification") for a in read("architectures") or ()):
        return get(TOKEN_CLASSIFICATION)
    problem = read("problem_type")
    if problem == "multi_label_classification":
        return get(MULTI_LABEL)
    num_labels = read("num_labels") or len(read("id2label") or {}) or 2
    if problem == "regression" or int(num_labels) == 1:
        return get(REGRESSION)
    return get(CLASSIFICATION)


def objective_for(task: Task, name: str) -> str:
    """``name``, or the task's own objective where ``name`` is the classification default."""
    return task.objective if name == Task.objective else name


def exits_for(task: Task, name: str) -> str:
    """``name``, or the task's own exit head where ``name`` is the classification default."""
    return task.exits if name == Task.exits else name


def criterion_for(task: Task, name: str) -> str:
    """``name``, or the task's own criterion where ``name`` is the classification default."""
    return task.criterion if name == Task.criterion else name


__all__ = ["TASKS", "Task", "Prediction", "prediction_row", "get", "task_of", "objective_for", "exits_for", "criterion_for",
           "CLASSIFICATION", "REGRESSION", "MULTI_LABEL",
           "TOKEN_CLASSIFICATION", "NAMES"]
