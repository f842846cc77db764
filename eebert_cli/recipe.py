"""Load and validate recipe files (TOML)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .config import RECIPE_VERSION, Recipe, from_dict
from .criteria import CRITERIA
from .errors import EebertError
from .exits import EXITS
from .objectives import OBJECTIVES


def _read(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise EebertError(f"recipe not found: {path}", "see recipes/ for examples")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise EebertError(f"{path} is not valid TOML ({e})", "fix the syntax") from None


def recipe_kind(path: str | Path) -> str:
    """"pipeline" (attach, calibrate, benchmark) or "compare" (several methods, one table)."""
    return str(_read(path).get("kind", "pipeline"))


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    raw = _read(p)
    if raw.get("kind", "pipeline") != "pipeline":
        raise EebertError(f"{path} is a {raw['kind']!r} recipe, not a pipeline recipe",
                          f"run it with `eebert run {path}` or `eebert {raw['kind']} {path}`")
    recipe = from_dict(Recipe, raw, where=p.name)
    if recipe.version != RECIPE_VERSION:
        raise EebertError(f"{path}: recipe version {recipe.version} is not supported",
                          f"this eebert reads version {RECIPE_VERSION}")
    for what, value in (("checkpoint", recipe.checkpoint), ("artifact", recipe.artifact),
                        ("data.spec", recipe.data.spec)):
        if not value:
            raise EebertError(f"{path}: {what} is missing", f"set {what} in the recipe")
    # Names are checked now, not half-way through a long run.
    EXITS.get(recipe.attach.exits)
    OBJECTIVES.get(recipe.attach.objective)
    CRITERIA.get(recipe.calibrate.criterion)
    cal = recipe.calibrate
    if (cal.target_speedup is None) == (cal.max_drop is None):
        raise EebertError(f"{path}: set exactly one of calibrate.target_speedup and calibrate.max_drop",
                          "for example target_speedup = 2.0")
    return recipe
