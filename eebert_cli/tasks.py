"""What a checkpoint does, read from its config, and each task's default objective and criterion.

One place for the task names (the registries' ``tasks`` declare them), for how a config is
read (``task_of`` takes a transformers config or the raw config.json dict), and for the
defaults the classification ones stand for: a recipe or flag that leaves ``ce-distil`` /
``entropy`` unchanged gets the task's own.
"""

from __future__ import annotations

CLASSIFICATION, REGRESSION, MULTI_LABEL = "classification", "regression", "multi-label"
TASKS = (CLASSIFICATION, REGRESSION, MULTI_LABEL)

#: the default objective and criterion (the classification ones) and what each task uses instead
DEFAULT_OBJECTIVE = {CLASSIFICATION: "ce-distil", REGRESSION: "mse-distil", MULTI_LABEL: "bce-distil"}
DEFAULT_CRITERION = {CLASSIFICATION: "entropy", REGRESSION: "patience-regression", MULTI_LABEL: "label-margin"}


def task_of(config) -> str:
    """One output or problem_type "regression" means regression; problem_type
    "multi_label_classification" a set of labels per example (sigmoid, see multilabel.py)."""
    get = config.get if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    problem = get("problem_type")
    if problem == "multi_label_classification":
        return MULTI_LABEL
    num_labels = get("num_labels") or len(get("id2label") or {}) or 2
    if problem == REGRESSION or int(num_labels) == 1:
        return REGRESSION
    return CLASSIFICATION


def objective_for(task: str, name: str) -> str:
    """``name``, or the task's own objective where ``name`` is the classification default."""
    return DEFAULT_OBJECTIVE[task] if name == DEFAULT_OBJECTIVE[CLASSIFICATION] else name


def criterion_for(task: str, name: str) -> str:
    """``name``, or the task's own criterion where ``name`` is the classification default."""
    return DEFAULT_CRITERION[task] if name == DEFAULT_CRITERION[CLASSIFICATION] else name
