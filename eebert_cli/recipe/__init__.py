"""Load and validate recipe files (TOML): everything is checked before anything runs.

:func:`check_components` builds every named component with its parameters (on the
checkpoint's shapes when the checkpoint is there), so a typo in a recipe fails in
a second with one line, never after attach has replaced an old artifact.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..scoring.config import BenchmarkConfig, CalibrationConfig
from ..train.config import AttachConfig
from ..core.configs import from_dict
from ..data import DataConfig
from ..model.device_config import DeviceConfig
from .expect import Expect
from ..core.errors import EebertError


RECIPE_VERSION = 1


@dataclass
class Recipe:
    """A whole run: attach, calibrate and benchmark one checkpoint on one data set."""

    version: int = field(default=RECIPE_VERSION, metadata={"help": "Recipe format version."})
    checkpoint: str = field(default="", metadata={"help": "Deployed checkpoint directory."})
    artifact: str = field(default="", metadata={"help": "Where the artifact is written."})
    data: DataConfig = field(default_factory=DataConfig)
    attach: AttachConfig = field(default_factory=AttachConfig)
    calibrate: CalibrationConfig = field(default_factory=CalibrationConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    expect: Expect = field(default_factory=Expect)
    device: DeviceConfig = field(default_factory=DeviceConfig)


def _read(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise EebertError(f"recipe not found: {path}", "see recipes/ for examples")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise EebertError(f"{path} is not valid TOML ({str(e).splitlines()[0]})", "fix the syntax") from None


def recipe_kind(path: str | Path) -> str:
    """"pipeline" (attach, calibrate, benchmark) or "compare" (several methods, one table)."""
    kind = _read(path).get("kind", "pipeline")
    if kind not in ("pipeline", "compare"):
        raise EebertError(f"{path}: unknown recipe kind {kind!r}", "kind is 'pipeline' (the default) or 'compare'")
    return kind


def checkpoint_config(checkpoint: str) -> dict | None:
    """The checkpoint's config.json, when it is a local directory that has one (no model is loaded)."""
    f = Path(checkpoint) / "config.json"
    try:
        return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None
    except (OSError, ValueError):
        return None


def check_components(attach: AttachConfig, criterion: str, criterion_params: dict, where: str,
                     checkpoint: str = "", calibrate: CalibrationConfig | None = None,
                     expect: Expect | None = None) -> dict:
    """Build every component ``attach`` and the criterion name, on the checkpoint's shapes when available;
    with ``calibrate`` (and ``expect``), its target's reach (an expected FLOPs speedup's) on that checkpoint's
    depth too.

    Returns {family: name} of what was built. Nothing is loaded but config.json.
    """
    from ..backbones import Dims, check_max_length
    from ..criteria import CRITERIA
    from ..exits import EXITS, ExitSet, ExitSpec
    from ..gates import GATES
    from ..tasks import criterion_for, exits_for, objective_for, task_of
    from ..objectives import OBJECTIVES

    cfg = checkpoint_config(checkpoint) if checkpoint else None
    task, name = None, None
    if cfg is not None:
        task = task_of(cfg)
        name = task.name
        check_max_length(attach.max_length, cfg, f"{where}: attach.max_length")
    layers = int((cfg or {}).get("num_hidden_layers") or (cfg or {}).get("n_layers") or 12)
    hidden = int((cfg or {}).get("hidden_size") or (cfg or {}).get("dim") or 64)
    heads = int((cfg or {}).get("num_attention_heads") or (cfg or {}).get("n_heads") or 4)
    dims = Dims(layers, hidden, 4 * hidden, heads, task.outputs(2) if task else 2)
    # without the checkpoint's depth, one exit (or the named layers) is built to check the params
    exit_layers = sorted(set(attach.layers)) or (list(range(1, layers)) if cfg is not None else [1])
    bad = [l for l in exit_layers if not 1 <= l < layers]
    if bad and cfg is not None:
        raise EebertError(f"{where}: no layer {bad[0]} to attach an exit after (the model has {layers} layers)",
                          f"choose layers from 1 to {layers - 1}")
    if calibrate is not None and cfg is not None:
        calibrate.check_reach(layers, exit_layers, bool(attach.gates.type))
    if expect is not None and cfg is not None:
        expect.check_reach(layers, exit_layers, bool(attach.gates.type))
    exits = exits_for(task, attach.exits) if task else attach.exits  # a tagger's default head is per token
    head = EXITS.get(exits)
    EXITS.check(exits, attach.exit_params, 1, name)
    if head.search_needs(attach.exit_params, exit_layers) is None:  # searched heads are built after the search
        ExitSet(ExitSpec(exits, exit_layers, dict(attach.exit_params), dict(attach.bypass)), dims)
    objective = objective_for(task, attach.objective) if task else attach.objective
    OBJECTIVES.build(objective, attach.objective_params, task=name)
    crit = criterion_for(task, criterion) if task else criterion
    CRITERIA.build(crit, criterion_params, task=name)
    built = {"exits": exits, "objective": objective, "criterion": crit}
    if attach.gates.type:
        g = attach.gates.spec(layers)
        GATES.build(g.pop("type"), {k: v for k, v in g.items() if k != "layers"}, g["layers"], dims, task=name)
        built["gates"] = attach.gates.type
    return built


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
    cal = recipe.calibrate
    if (cal.target_speedup is None) == (cal.max_drop is None):
        raise EebertError(f"{path}: set exactly one of calibrate.target_speedup and calibrate.max_drop",
                          "for example target_speedup = 2.0")
    # Names, parameters, calibration settings and the target's reach are checked now, not after attach.
    from ..criteria import CRITERIA
    from ..steps import check_calibration

    check_calibration(cal)
    if CRITERIA.get(cal.criterion).per_token:  # its threshold is chosen after a per-sentence calibration
        raise EebertError(f"{path}: calibrate.criterion {cal.criterion!r} is a per-token exit, chosen by "
                          "`eebert calibrate ARTIFACT --token-exit` once the per-sentence thresholds are",
                          "name a per-sentence criterion here (e.g. entropy), then run calibrate --token-exit")
    recipe.expect.check(recipe.benchmark.repeats, p.name)
    check_components(recipe.attach, cal.criterion, cal.criterion_params, p.name, recipe.checkpoint, cal,
                     recipe.expect)
    check_metric(recipe.benchmark.metric, recipe.checkpoint, p.name)
    from ..deploy.onnx_runtime import check_pool

    b = recipe.benchmark  # ONNX Runtime settings without its runtime: refused now, not when benchmark comes
    check_pool(b.ort_pool, b.runtime, b.onnx_dir)
    return recipe


def check_metric(metric: str, checkpoint: str, where: str) -> None:
    """``benchmark.metric`` the checkpoint's task reports (a tagger's report leads with entity F1, which its
    thresholds are chosen on): refused now, not by calibrate after attach."""
    cfg = checkpoint_config(checkpoint) if metric else None
    if cfg is None:
        return
    from ..tasks import task_of

    try:  # one the task does not report, or cannot lead with (a tagger's): one line naming the key
        task_of(cfg).choose_metric(metric, "benchmark.metric")
    except EebertError as e:
        raise EebertError(f"{where}: {e.message}", e.hint) from None


def check_sources(checkpoint: str, data_spec: str, device) -> dict[str, list[str]]:
    """What `eebert validate` can check of a recipe's paths and device on this machine, without loading a model.

    A local checkpoint is checked as attach checks it (architecture, weights, tokenizer files) and
    refused the same way; what is not here (a path on another machine, a hub id not cached) is
    listed as skipped, and a device this machine lacks as a warning (the recipe may be meant for another).
    """
    from ..model.checkpoint import check_checkpoint
    from ..data import corpora
    from ..core.hub import is_hub_id

    skipped, warnings = [], []
    if Path(checkpoint).expanduser().exists():
        from ..backbones import adapter_class

        check_checkpoint(checkpoint)
        adapter_class((checkpoint_config(checkpoint) or {}).get("model_type"))  # a family attach cannot read
    elif checkpoint and is_hub_id(checkpoint):
        skipped.append(f"checkpoint {checkpoint}: a hub id, resolved at attach (architecture and shapes not checked)")
    elif checkpoint:
        skipped.append(f"checkpoint {checkpoint}: not found on this machine (architecture and shapes not checked)")
    if data_spec and data_spec not in corpora.CORPORA and not Path(data_spec).expanduser().exists():
        where = "a hub dataset id, read at attach" if is_hub_id(data_spec.partition(":")[0]) else \
            "not found on this machine"
        skipped.append(f"data {data_spec}: {where} (rows not checked)")
    if device is not None and str(device.device).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            warnings.append(f"[device] asks for {device.device}, and this machine has no CUDA device "
                            "(fine if the recipe is meant for another machine)")
    return {"skipped": skipped, "warnings": warnings}
