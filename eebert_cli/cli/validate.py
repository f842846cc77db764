"""`eebert validate`: a recipe checked whole without running it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from ..core.ui import err, out
from .shared import command, emit, JSON, recipe_terms


@command
def validate_recipe(recipe: Path = typer.Argument(..., help="Recipe file (TOML) to check."), as_json: bool = JSON):
    """Check a recipe without running it: every key, value and component (built with its params)."""
    from ..recipe import Recipe, check_components, check_sources, load_recipe, recipe_kind
    from ..recipe.compare import CompareRecipe, load_compare_recipe

    kind = recipe_kind(recipe)
    with recipe_terms(CompareRecipe if kind == "compare" else Recipe, ("--json",)):  # its user sets recipe keys
        if kind == "compare":
            r, methods = load_compare_recipe(recipe)  # builds each method's components
            notes = check_sources(r.checkpoint, r.data.spec, None)
            rows = [{"name": m.name, **check_components(m.attach, m.criterion, m.criterion_params, m.name,
                                                        r.checkpoint)} for m in methods]
            result = {"recipe": str(recipe), "kind": "compare", "valid": True, "methods": rows}
        else:
            r = load_recipe(recipe)
            notes = check_sources(r.checkpoint, r.data.spec, r.device)
            rows = [{"name": "pipeline", **check_components(r.attach, r.calibrate.criterion,
                                                            r.calibrate.criterion_params, recipe.name, r.checkpoint)}]
            result = {"recipe": str(recipe), "kind": "pipeline", "valid": True, "methods": rows,
                      "expect": {k: v for k, v in dataclasses.asdict(r.expect).items() if v is not None}}
    result.update(notes)
    if as_json:
        emit(result, True)
        return
    from rich.markup import escape

    for line in notes["skipped"]:
        err.print(f"[dim]skipped:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for line in notes["warnings"]:
        err.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
    from rich.table import Table

    t = Table("method", "exits", "objective", "criterion", "gates", title=f"{recipe}: valid")
    for row in rows:
        t.add_row(row["name"], row["exits"], row["objective"], row["criterion"], row.get("gates", "-"))
    out.print(t)
