"""`eebert run`: attach, calibrate and benchmark as a recipe says; its [expect] table decides the exit status."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.errors import EebertError
from ..core.ui import UI, err, out
from ..recipe import Recipe
from .shared import command, emit, JSON, CONFIG, DEVICE, DTYPE, device_opts, need, recipe_terms, print_report
from .compare import compare


@command
def run(recipe: Optional[Path] = typer.Argument(None, help="Recipe file (TOML), see recipes/."),
        config: Optional[Path] = CONFIG, as_json: bool = JSON,
        overwrite: bool = typer.Option(False, "--overwrite", help="Let the recipe's artifact go into an existing "
                                       "directory that is not an artifact (other files are kept)."),
        device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE):
    """Attach, calibrate and benchmark as a recipe says; exit 3 when its expectations (the expect table) are not met."""
    from ..recipe import recipe_kind

    recipe = need(recipe or config, "recipe", "RECIPE")
    if recipe_kind(recipe) == "compare":  # one verb runs every shipped recipe
        if overwrite:  # compare writes only into its own folders: the flag would do nothing
            raise EebertError("--overwrite lets a pipeline recipe's artifact into a foreign folder; a compare "
                              "recipe writes its own out folder", "drop --overwrite, or give the recipe another out")
        return compare(recipe, None, as_json=as_json, device=device, dtype=dtype, resume=False, only=None,
                       checkpoint=None, out_dir=None)
    with recipe_terms(Recipe, OWN_FLAGS):  # the steps name flags; this command's user sets recipe keys
        return _run(recipe, as_json, overwrite, device, dtype)


#: the flags `run` has: a refusal naming one of them needs no recipe key
OWN_FLAGS = ("--config", "--overwrite", "--device", "--dtype", "--json")


def _run(recipe: Path, as_json: bool, overwrite: bool, device: str | None, dtype: str | None):
    from .. import steps
    from ..model.device import resolve
    from ..recipe.expect import EXPECTATIONS_FAILED, check, table
    from ..recipe import load_recipe

    r = load_recipe(recipe)  # validated whole, components built: nothing runs on a bad recipe
    dev = device_opts(r, device, dtype)
    ui = UI(quiet=as_json)
    ui.log(f"[bold]attach[/] {r.checkpoint} -> {r.artifact} ({resolve(dev).describe()})")
    attached = steps.attach(r.checkpoint, r.data, r.attach, r.artifact, ui, device=dev, overwrite=overwrite)
    ui.log(f"[bold]calibrate[/] {r.calibrate.criterion}")
    # the same calls as `eebert calibrate --config R` and `eebert benchmark --config R`
    calibration = steps.calibrate(r.artifact, r.data, r.calibrate, ui, device=dev, metric=r.benchmark.metric or None)
    ui.log(f"[bold]benchmark[/] on {r.benchmark.split}")
    report = steps.benchmark(r.artifact, r.data, r.benchmark, ui, device=dev)
    print_report(Path(r.artifact), report, as_json)
    verdict = check(r.expect, report) if r.expect.any() else None
    emit({"attach": attached, "calibration": calibration.summary(), "report": report, "expectations": verdict},
         as_json)
    if verdict is not None:
        if not as_json:
            out.print(table(verdict))
        if not verdict["passed"]:
            failed = [c["name"] for c in verdict["checks"] if not c["passed"]]
            err.print(f"[bold red]expectations not met:[/] {', '.join(failed)}", highlight=False)
            raise typer.Exit(EXPECTATIONS_FAILED)
