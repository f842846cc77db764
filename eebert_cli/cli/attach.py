"""`eebert attach`: exits (and gates, BADGE bypasses) trained on the frozen checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from ..core.configs import from_dict, help_for
from ..core.errors import EebertError
from ..gates.config import GateConfig
from ..train.config import AttachConfig, TrainConfig
from ..core.ui import UI, out
from ..recipe import Recipe
from .shared import (
    command, data_flags, emit, JSON, CONFIG, recipe_of, given, data_opts, field_option, field_flag, DATA, TEXT, PAIR, LABEL,
    TOKENS, TAGS, MAXS, DCONF, DEVICE, DTYPE, EXECUTOR, RAY_ADDRESS, device_opts, SPLIT_MAP, need,
    parse_layers, parse_params,
)


@command
def attach(
    checkpoint: Optional[str] = typer.Argument(None, help="Deployed checkpoint directory (a *ForSequenceClassification); default: the recipe's."),
    out_dir: Optional[Path] = field_option(Recipe, "artifact", "--out", "-o", default_flag=False, extra=" A new directory, or an artifact to replace; default: the recipe's artifact."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Write into an existing directory that is not an "
                                   "artifact; only the artifact's own files are replaced, other files are kept."),
    config: Optional[Path] = CONFIG,
    data: Optional[str] = DATA, text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    tokens_column: Optional[str] = TOKENS, tags_column: Optional[str] = TAGS,
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    exits: Optional[str] = field_option(AttachConfig, "exits"),
    layers: Optional[str] = field_option(AttachConfig, "layers", extra=" Comma-separated.", default_flag=False),
    exit_param: Optional[list[str]] = field_flag(AttachConfig, "exit_params", typer.Option(
        None, help="Exit head parameter KEY=VALUE (repeatable).")),
    objective: Optional[str] = field_option(AttachConfig, "objective"),
    objective_param: Optional[list[str]] = field_flag(AttachConfig, "objective_params", typer.Option(
        None, help="Objective parameter KEY=VALUE (repeatable).")),
    bypass: Optional[str] = typer.Option(None, help="Block-wise bypasses feeding the exits: 'badge' (BADGE)."),
    block_size: Optional[int] = typer.Option(None, help="Layers per bypass block (with --bypass; default 2)."),
    gates: Optional[str] = field_flag(GateConfig, "type", typer.Option(
        None, help="Layer-skipping gates before the layers: 'smartbert' (SmartBERT).")),
    skip_target: Optional[float] = field_option(GateConfig, "skip_target"),
    train_backbone: bool = field_flag(GateConfig, "train_backbone", typer.Option(
        False, "--train-backbone", help=help_for(GateConfig, "train_backbone") + " Needs --gates.")),
    gate_param: Optional[list[str]] = typer.Option(None, help="Gate knob KEY=VALUE (repeatable), e.g. epochs=2; see docs/methods/smartbert.md."),
    contrastive: Optional[float] = field_option(TrainConfig, "contrastive"),
    no_labels: bool = field_flag(AttachConfig, "use_labels", typer.Option(
        False, "--no-labels", help="Ignore gold labels: learn the deployed model's predictions.")),
    max_length: Optional[int] = field_option(AttachConfig, "max_length"),
    epochs: Optional[int] = field_option(TrainConfig, "epochs"),
    lr: Optional[float] = field_option(TrainConfig, "lr"),
    seed: Optional[int] = field_option(TrainConfig, "seed"),
    feature_cache: Optional[str] = field_option(AttachConfig, "feature_cache", "--feature-cache"),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE, executor: Optional[str] = EXECUTOR,
    ray_address: Optional[str] = RAY_ADDRESS,
    as_json: bool = JSON,
):
    """Attach exits to a deployed checkpoint and train them, backbone frozen."""
    r = recipe_of(config)
    checkpoint = need(checkpoint or r.checkpoint, "checkpoint", "CHECKPOINT")
    out_dir = Path(need(out_dir or r.artifact, "artifact directory", "--out"))
    flags = data_flags(text_column, pair_column, label_column, max_samples, data_config, split_map,
                       tokens_column, tags_column)
    dcfg = data_opts(r.data if config else None, data, flags)
    if dcfg is None or not dcfg.spec:
        raise EebertError("no data given", "pass --data with a corpus name or a file")
    base = r.attach
    if skip_target is not None:  # refused as the flag it is, before it merges with --gate-param's keys
        given(base.gates, skip_target=skip_target)
    g = from_dict(GateConfig, {**dataclasses.asdict(base.gates), **({"type": gates} if gates else {}),
                               **({"skip_target": skip_target} if skip_target is not None else {}),
                               **({"train_backbone": True} if train_backbone else {}),
                               **parse_params(gate_param, "--gate-param")}, "--gate-param")
    if g.train_backbone and not g.type:
        raise EebertError("--train-backbone trains the backbone with skipping gates; it needs --gates",
                          "add --gates smartbert, or drop --train-backbone (exits alone never change the backbone)")
    if not g.type and (skip_target is not None or gate_param):  # said, not ignored
        raise EebertError("--skip-target and --gate-param set skipping gates; without --gates there are none",
                          "add --gates smartbert, or drop them")
    bp = dict(base.bypass)
    if bypass:
        bp = {**bp, "type": bypass}
    if block_size is not None:
        if not bp.get("type"):
            raise EebertError("--block-size sets the BADGE bypasses' blocks; without --bypass there are none",
                              "add --bypass badge, or drop --block-size")
        bp = {**bp, "block_size": block_size}
    cfg = given(base, exits=exits, layers=parse_layers(layers) if layers else None,
                exit_params={**base.exit_params, **parse_params(exit_param, "--exit-param")},
                objective=objective, objective_params={**base.objective_params, **parse_params(objective_param, "--objective-param")},
                bypass=bp, gates=g, max_length=max_length, use_labels=False if no_labels else None,
                feature_cache=feature_cache,
                train=given(base.train, epochs=epochs, lr=lr, seed=seed, contrastive=contrastive))
    dev = device_opts(r, device, dtype, executor, ray_address)
    from .. import steps  # here, after the flags are checked: bad input is refused before torch loads
    from ..recipe import check_components

    check_components(cfg, r.calibrate.criterion, r.calibrate.criterion_params, "attach", checkpoint)
    result = steps.attach(checkpoint, dcfg, cfg, out_dir, UI(quiet=as_json), device=dev, overwrite=overwrite)
    emit(result, as_json)
    if not as_json:
        out.print(f"attached {len(result['exits']['layers'])} {result['exits']['type']} exits "
                  f"(layers {result['exits']['layers']}), trained on {result['examples']} examples "
                  f"({result['targets']}), best epoch {result['best_epoch']} -> {out_dir}")
        if result.get("leco_search"):
            out.print("LECO search chose: " + ", ".join(
                f"layer {l}: {c}" for l, c in result["leco_search"]["choices"].items()))
        weights = (result.get("objective_report") or {}).get("weights")
        if isinstance(weights, dict):
            out.print("learned loss weights: " + ", ".join(f"{k} {v:.3f}" for k, v in weights.items()))
        if result.get("bypass"):
            b = result["bypass"]
            out.print(f"bypasses: {b['blocks']} blocks, {100 * b['overhead_per_layer']:.2f}% of a layer's FLOPs per exit")
        if result.get("gates"):
            last = result["gates"]["history"][-1]
            out.print(f"gates: {len(result['exits']['gates']['layers'])} gated layers, held-out skip rate "
                      f"{100 * last.get('skip_rate', last['train_skip_rate']):.1f}%"
                      + (", backbone trained (weights in the artifact)" if result["backbone_trained"] else ""))
