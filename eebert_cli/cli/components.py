"""`eebert list`: the registered components."""

from __future__ import annotations

from ..core.ui import out
from .shared import command, emit, JSON


@command
def list_components(as_json: bool = JSON):
    """List the registered components: exit heads, criteria, objectives, skipping gates, backbones, tasks,
    runtimes and executors (each named by string in flags and recipes)."""
    from ..backbones import BACKBONES
    from ..criteria import CRITERIA
    from ..deploy.executors import EXECUTORS
    from ..deploy.runtimes import RUNTIMES
    from ..exits import EXITS
    from ..gates import GATES
    from ..objectives import OBJECTIVES
    from ..tasks import TASKS

    import inspect

    from ..core.checks import span

    def describe(reg, positional: int = 0):
        items = {}
        for name in reg.names():
            cls = reg.get(name)
            params = {k: (None if p.default is inspect.Parameter.empty else p.default)
                      for k, p in reg.declared(name, positional).items()}  # what build accepts
            ranges = {k: span(*r) for k, r in reg.bounds_of(name, positional).items()}  # what check enforces
            items[name] = {"params": params, "ranges": ranges, "about": first_line(cls).replace("``", "`")}
        return items

    def shown(d: dict) -> str:  # name=default, with its range where one is declared
        def rng(k):
            r = d["ranges"].get(k)
            return "" if r is None else f" in {r.removeprefix('within ')}" if r.startswith("within ") else f" ({r})"
        return ", ".join(f"{k}={v}{rng(k)}" for k, v in d["params"].items())

    def first_line(cls) -> str:  # a class's own docstring first (modules holding several), else its module's
        return ((cls.__dict__.get("__doc__") or inspect.getmodule(cls).__doc__ or "").strip().splitlines() or [""])[0]

    def about(reg):  # components chosen by name alone (no parameters)
        return {n: {"about": first_line(reg.get(n)).replace("``", "`")} for n in reg.names()}

    result = {"exits": describe(EXITS, 1), "criteria": describe(CRITERIA), "objectives": describe(OBJECTIVES),
              "gates": describe(GATES, 2), "backbones": {n: {"model_types": list(BACKBONES.get(n).model_types)} for n in BACKBONES.names()},
              "tasks": about(TASKS), "runtimes": about(RUNTIMES), "executors": about(EXECUTORS)}
    if as_json:
        emit(result, True)
        return
    from rich.markup import escape  # "[0.0, 1.0)" is a range, not markup
    from rich.table import Table

    for kind in ("exits", "criteria", "objectives", "gates"):
        t = Table("name", "parameters", "about", title=kind)
        for name, d in result[kind].items():
            t.add_row(name, escape(shown(d)), d["about"])
        out.print(t)
    for kind in ("tasks", "runtimes", "executors"):
        t = Table("name", "about", title=kind)
        for name, d in result[kind].items():
            t.add_row(name, d["about"])
        out.print(t)
    out.print("backbones: " + ", ".join(t for d in result["backbones"].values() for t in d["model_types"]))
