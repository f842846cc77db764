"""Load and validate recipe files (TOML)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .config import RECIPE_VERSION, Recipe, from_dict
from .criteria import CRITERIA
from .errors import EebertError
from .exits import EXITS
from .objectives import OBJECTIVES


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise EebertError(f"recipe not found: {path}", "see recipes/ for examples")
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EebertError(f"{path} is not valid TOML ({e})", "fix the syntax") from None
    recipe = from_dict(Recipe, raw, where=p.name)
    if recipe.version != RECIPE_VERSION:
        raise EebertError(f"{path}: recipe version {recipe.version} is not supported",
                          f"this eebert reads version {RECIPE_VERSION}")
    for what, value in (("checkpoint", recipe.checkpoint), ("artifact", recipe.artifact),
                        ("data.spec", recipe.data.spec)):
        if not value:
            raise EebertError(f"{path}: {what} is missing", f"set {what} in the recipe")
    # Names are checked now, not half-way through a long run.
    if recipe.attach.exits != "leco":
        EXITS.get(recipe.attach.exits)
    OBJECTIVES.get(recipe.attach.objective)
    CRITERIA.get(recipe.calibrate.criterion)
    cal = recipe.calibrate
    if (cal.target_speedup is None) == (cal.max_drop is None):
        raise EebertError(f"{path}: set exactly one of calibrate.target_speedup and calibrate.max_drop",
                          "for example target_speedup = 2.0")
    return recipe
