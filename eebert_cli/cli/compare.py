"""`eebert compare`: several methods on one checkpoint and data set, one table."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.errors import EebertError
from ..core.ui import UI, out
from .shared import command, emit, JSON, CONFIG, given, DEVICE, DTYPE, need, recipe_terms


@command
def compare(recipe: Optional[Path] = typer.Argument(None, help="Compare recipe (TOML), see recipes/compare-*.toml."),
            config: Optional[Path] = CONFIG, as_json: bool = JSON,
            device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
            resume: bool = typer.Option(False, "--resume", help="Keep the methods compare.json already holds "
                                        "for this checkpoint, recipe and eebert version, and the seeds a stopped "
                                        "method finished; run the rest."),
            only: Optional[str] = typer.Option(None, "--methods", help="Run only these methods (comma-separated "
                                               "names); keep the others' rows from compare.json as --resume does."),
            checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Run the recipe on this checkpoint "
                                                     "instead of its own (give --out too, or rows of two models mix "
                                                     "in one folder's compare.json)."),
            out_dir: Optional[str] = typer.Option(None, "--out", help="Folder for compare.json, compare.md and the "
                                                  "artifacts, instead of the recipe's `out`.")):
    """Train and calibrate several method combinations on one checkpoint and data set; one table."""
    from ..recipe.compare import CompareRecipe

    with recipe_terms(CompareRecipe, OWN_FLAGS):  # the steps name flags; this command's user sets recipe keys
        return _compare(recipe or config, as_json, device, dtype, resume, only, checkpoint, out_dir)


#: the flags `compare` has: a refusal naming one of them needs no recipe key
OWN_FLAGS = ("--config", "--device", "--dtype", "--resume", "--methods", "--checkpoint", "--out", "--json")


def _compare(recipe: Path | None, as_json: bool, device: str | None, dtype: str | None, resume: bool,
             only: str | None, checkpoint: str | None, out_dir: str | None):
    from ..model.device import resolve
    from ..recipe.compare import load_compare_recipe, run_compare
    from ..recipe.compare_report import check_report_folder, table, write

    if checkpoint and not out_dir:  # resume keys on the weights, but the report would mix two models' rows
        raise EebertError("--checkpoint without --out would write into the recipe's folder for its own checkpoint",
                          "give --out DIR as well")
    r, methods = load_compare_recipe(need(recipe, "recipe", "RECIPE"), checkpoint=checkpoint, out=out_dir)
    r.device = given(r.device, device=device, dtype=dtype)
    resolve(r.device)  # a device that is not there fails before anything loads
    check_report_folder(Path(r.out))  # a compare.json or compare.md of someone else's is never replaced
    names = [n.strip() for n in only.split(",") if n.strip()] if only is not None else None
    if names is not None and not names:
        raise EebertError("--methods names no method", "give method names from the recipe, comma-separated")
    report = run_compare(r, methods, UI(quiet=as_json), on_method=lambda partial: write(partial, Path(r.out)),
                         resume=resume, only=names)
    write(report, Path(r.out))
    emit(report, as_json)
    if not as_json:
        out.print(table(report))
        out.print(f"report written to {r.out}/compare.json and compare.md")
