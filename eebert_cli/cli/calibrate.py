"""`eebert calibrate`: thresholds chosen on validation for a target speedup or an accuracy budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from ..scoring.config import BenchmarkConfig, CalibrationConfig
from ..core.configs import help_for
from ..core.ui import UI, err, out
from ..model.quantize import check_scheme
from .shared import (
    command, emit, JSON, CONFIG, recipe_of, given, data_opts, data_flags, field_option, field_flag, DATA, TEXT, PAIR,
    LABEL, TOKENS, TAGS, MAXS, DCONF, DEVICE, DTYPE, device_opts, SPLIT_MAP, need, parse_params,
)


@command
def calibrate(
    artifact: Optional[Path] = typer.Argument(None, help="Artifact directory from `eebert attach`; default: the recipe's."),
    config: Optional[Path] = CONFIG,
    target_speedup: Optional[float] = field_option(CalibrationConfig, "target_speedup", default_flag=False),
    max_drop: Optional[float] = field_option(CalibrationConfig, "max_drop", default_flag=False),
    unlabeled: Optional[str] = field_option(CalibrationConfig, "unlabeled", default_flag=False),
    criterion: Optional[str] = field_option(CalibrationConfig, "criterion"),
    criterion_param: Optional[list[str]] = field_flag(CalibrationConfig, "criterion_params", typer.Option(
        None, help="Criterion parameter KEY=VALUE (repeatable).")),
    global_only: bool = field_flag(CalibrationConfig, "per_layer", typer.Option(
        False, "--global-threshold", help="One threshold for all exits (no per-exit refinement).")),
    gate_threshold: Optional[list[float]] = field_option(CalibrationConfig, "gate_thresholds", extra=" Repeatable.", default_flag=False),
    cost: Optional[str] = field_option(CalibrationConfig, "cost", "--cost"),
    latency_runtime: Optional[str] = field_option(CalibrationConfig, "latency_runtime", "--latency-runtime"),
    runtime: Optional[str] = field_option(CalibrationConfig, "runtime", "--runtime"),
    prune_exits: Optional[bool] = field_flag(CalibrationConfig, "prune_exits", typer.Option(
        None, "--prune-exits/--keep-exits", help=help_for(CalibrationConfig, "prune_exits") + " On by default.")),
    within_noise: bool = field_flag(CalibrationConfig, "prune_within_noise", typer.Option(
        False, "--prune-within-noise", help=help_for(CalibrationConfig, "prune_within_noise"))),
    metric: Optional[str] = field_option(BenchmarkConfig, "metric", "--metric"),
    data: Optional[str] = DATA, text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    tokens_column: Optional[str] = TOKENS, tags_column: Optional[str] = TAGS,
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    quantize: Optional[str] = typer.Option(None, help="Calibrate on a dynamically quantized backbone (int8); "
                                           "benchmark and predict then load it quantized too."),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    token_exit: bool = typer.Option(False, "--token-exit", help="Taggers: choose the per-token exit's threshold by "
                                    "running that pass on validation (CPU); the per-sentence thresholds stay."),
    as_json: bool = JSON,
):
    """Choose exit thresholds on the validation split for a target speedup or accuracy budget."""
    r = recipe_of(config)
    artifact = Path(need(artifact or r.artifact, "artifact", "ARTIFACT"))
    check_scheme(quantize)
    base = r.calibrate
    if target_speedup is not None or max_drop is not None:  # a budget flag replaces the recipe's budget
        base = dataclasses.replace(base, target_speedup=None, max_drop=None)
    cfg = given(base, criterion=criterion, target_speedup=target_speedup, max_drop=max_drop, unlabeled=unlabeled,
                per_layer=False if global_only else None, gate_thresholds=gate_threshold or None, cost=cost,
                latency_runtime=latency_runtime, runtime=runtime, prune_exits=prune_exits, prune_within_noise=True if within_noise else None,
                criterion_params={**base.criterion_params, **parse_params(criterion_param, "--criterion-param")})
    metric = given(r.benchmark, metric=metric).metric or None
    flags = data_flags(text_column, pair_column, label_column, max_samples, data_config, split_map,
                       tokens_column, tags_column)
    dcfg = data_opts(r.data if config else None, data, flags)
    from .. import steps  # here, after the flags are checked: bad input is refused before torch loads
    result = steps.calibrate(artifact, dcfg, cfg, UI(quiet=as_json), device=device_opts(r, device, dtype),
                             backbone=backbone, quantize=quantize, metric=metric,
                             data_flags=flags, token_exit=token_exit).to_dict()
    if token_exit:
        te = result["token_exit"]
        emit({k: v for k, v in te.items() if k != "curve"}, as_json)
        if not as_json:
            v = te["validation"]
            out.print(f"per-token exit: a word halts at p >= {te['threshold']}; validation {v['speedup_flops']:.2f}x "
                      f"FLOPs speedup, entity F1 {100 * v['entity_f1']:.2f} vs deployed "
                      f"{100 * v['reference_entity_f1']:.2f}; written to {artifact}/calibration.json")
        return
    head = result["headline_metric"]
    emit({k: v for k, v in result.items() if k not in ("curve", "curves")}, as_json)
    if not as_json:
        v, m = result["validation"], result["metric"]
        from ..tasks import get as get_task

        fmt = get_task(result.get("task")).format
        extra = ""
        mv = v.get("metrics", {})
        if head != m and mv.get(head) is not None:
            extra = f", {head} {fmt(mv[head])} vs deployed {fmt(mv['deployed_' + head])}"
        margin = result.get("margin")
        if margin and "bound_points" in margin:
            extra += (f"; drop bound {margin['bound_points']:.2f} points = disagreement with the deployed model "
                      f"{margin['disagreement_points']:.2f} + margin {margin['points']:.2f} "
                      f"({100 * margin['confidence']:.0f}% z*SE over {margin['rows']['validation']:,} validation + "
                      f"{margin['rows']['unlabeled']:,} unlabeled rows)")
        elif margin:
            extra += (f"; --max-drop kept with a {margin['points']:.2f}-point margin ("
                      + (margin.get("method") or f"{100 * margin['confidence']:.0f}% z*SE bound on labelled "
                                                 "validation rows") + ")")
        deployed = v.get(f"deployed_{m}", v.get(f"reference_{m}"))  # a tagger's record: the deployed tagger's F1
        out.print(f"{result['criterion']}: validation {v['speedup_flops']:.2f}x FLOPs speedup "
                  f"(95% CI at the chosen thresholds {v['speedup_ci95'][0]:.2f}-{v['speedup_ci95'][1]:.2f}), "
                  f"{m} {fmt(v[m])} vs deployed {fmt(deployed)}{extra}; "
                  f"thresholds written to {artifact}/calibration.json")
        if result.get("runtime"):
            out.print(f"scored on {result['runtime']}'s own outputs ({result.get('quantize') or 'fp32'} graphs, one "
                      "example at a time): export at that precision to serve this operating point")
        off = v.get("switched_off")
        if off is not None:
            out.print((f"exits switched off at layer{'s' if len(off) > 1 else ''} {', '.join(map(str, off))}"
                       if off else "every exit kept") + f"; {v['exits_evaluated']:.2f} exits evaluated per example")
        if result.get("cost"):
            out.print(f"latency model: {v['speedup_latency_model']:.2f}x estimated at batch size 1 on this machine")
        for w in result["warnings"]:
            err.print(f"[yellow]warning:[/] {w}")
