"""A name -> class registry, shared by exits, criteria, objectives, gates and backbones.

Recipes and flags name components by string; adding a component means writing a
class decorated with ``@REGISTRY.register("name")`` in a module of its family's
package (modules are found by :func:`discover`, no import list to keep).

Every family has the same contract, :meth:`Registry.build`: the name must be
registered, the parameters must be ones the class's constructor declares, of the
declared type, within the class's ``bounds``, and the class must serve the
model's task (``tasks`` on each base class). Each failure is one line and a hint.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from typing import Any, Callable, Generic, NamedTuple, TypeVar

from .checks import check_range, check_type, closest, default_example
from .errors import EebertError

T = TypeVar("T")


class Range(NamedTuple):
    """Allowed values of a numeric parameter (``None`` = unbounded on that side)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False


#: ranges of parameter names that mean the same thing in every component; a class's
#: own ``bounds`` add to (and override) these
COMMON_BOUNDS: dict[str, Range] = {
    "dropout": Range(0.0, 1.0, hi_open=True),
    "width": Range(0),          # 0 / None = the component's default width
    "heads": Range(1),
    "temperature": Range(0.0, lo_open=True),
    "patience": Range(1),
    "alpha": Range(0.0, 1.0),
}


def discover(package: str) -> None:
    """Import every module of ``package`` so their ``@register`` decorators run."""
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{package}.{mod.name}")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            setattr(obj, "registry_name", name)
            return obj

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise EebertError(f"unknown {self.kind} {name!r}", closest(name, self.names())) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self.names())

    def declared(self, name: str, positional: int = 0) -> dict[str, inspect.Parameter]:
        """The keyword parameters ``name``'s constructor declares, after ``positional`` leading ones."""
        ps = list(inspect.signature(self.get(name).__init__).parameters.values())[1 + positional:]
        return {p.name: p for p in ps if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def bounds_of(self, name: str, positional: int = 0) -> dict[str, Range]:
        """The ranges of ``name``'s declared parameters: the shared ones (``COMMON_BOUNDS``) its constructor
        takes, then its class's own ``bounds``."""
        declared = self.declared(name, positional)
        return {k: r for k, r in {**COMMON_BOUNDS, **getattr(self.get(name), "bounds", {})}.items() if k in declared}

    def check(self, name: str, params: dict[str, Any] | None = None, positional: int = 0,
              task: str | None = None) -> dict[str, Any]:
        """Validated ``params`` for ``name`` (ints widened to floats where declared), without building."""
        cls = self.get(name)
        if task is not None and task not in getattr(cls, "tasks", (task,)):
            fits = [n for n in self.names() if task in getattr(self.get(n), "tasks", (task,))]
            raise EebertError(f"{self.kind} {name!r} is for {' / '.join(cls.tasks)}, this model does {task}",
                              f"choose one for {task}: {', '.join(fits) or '(none)'}")
        params = dict(params or {})
        if getattr(cls, "open_params", False):  # the class checks its own keys (see exits/leco.py)
            return params
        declared = self.declared(name, positional)
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # unresolvable annotations: fall back to the defaults' types
            hints = {}
        bounds = self.bounds_of(name, positional)
        for key, value in params.items():
            where = f"{self.kind} {name!r} parameter {key!r}"
            if key not in declared:
                raise EebertError(f"unknown parameter {key!r} for {self.kind} {name!r}", closest(key, declared))
            default = declared[key].default
            tp = hints.get(key, type(default) if default not in (None, inspect.Parameter.empty) else Any)
            params[key] = check_type(value, tp, where)
            if key in bounds:
                check_range(params[key], where, *bounds[key],
                            hint=default_example(default, *bounds[key]) or "see `eebert list` for its parameters")
        return params

    def build(self, name: str, params: dict[str, Any] | None = None, *args: Any, task: str | None = None) -> T:
        """An instance of ``name``: ``cls(*args, **params)`` once :meth:`check` has passed."""
        params = self.check(name, params, len(args), task)
        try:
            return self.get(name)(*args, **params)
        except (TypeError, ValueError) as e:
            raise EebertError(f"bad parameters for {self.kind} {name!r}: {e}",
                              "see `eebert list` for each component's parameters") from None
