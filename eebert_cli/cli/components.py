"""`eebert list`: the registered components."""

from __future__ import annotations



from ..core.ui import out
from .shared import command, emit, JSON


@command
def list_components(as_json: bool = JSON):
    """List the registered exit heads, criteria, objectives, skipping gates and backbones."""
    from ..backbones import BACKBONES
    from ..criteria import CRITERIA
    from ..exits import EXITS
    from ..gates import GATES
    from ..objectives import OBJECTIVES

    import inspect

    def describe(reg, positional: int = 0):
        items = {}
        for name in reg.names():
            cls = reg.get(name)
            params = {k: (None if p.default is inspect.Parameter.empty else p.default)
                      for k, p in reg.declared(name, positional).items()}  # what build accepts
            # a class's own docstring first (modules holding several components), else its module's
            doc = (cls.__dict__.get("__doc__") or inspect.getmodule(cls).__doc__ or "").strip().splitlines()[0]
            items[name] = {"params": params, "about": doc}
        return items

    result = {"exits": describe(EXITS, 1), "criteria": describe(CRITERIA), "objectives": describe(OBJECTIVES),
              "gates": describe(GATES, 2), "backbones": {n: {"model_types": list(BACKBONES.get(n).model_types)} for n in BACKBONES.names()}}
    if as_json:
        emit(result, True)
        return
    from rich.table import Table

    for kind in ("exits", "criteria", "objectives", "gates"):
        t = Table("name", "parameters", "about", title=kind)
        for name, d in result[kind].items():
            t.add_row(name, ", ".join(f"{k}={v}" for k, v in d["params"].items()), d["about"])
        out.print(t)
    out.print("backbones: " + ", ".join(t for d in result["backbones"].values() for t in d["model_types"]))
