"""`eebert benchmark`: the early-exit model against the deployed model, static truncation and the oracle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..scoring.config import BenchmarkConfig
from ..core.checks import check_batch_size
from ..core.ui import UI
from .shared import (
    command, emit, JSON, CONFIG, recipe_of, given, data_opts, data_flags, field_option, DATA, TEXT, PAIR,
    LABEL, TOKENS, TAGS, MAXS, DCONF, DEVICE, DTYPE, device_opts, SPLIT_MAP, need, print_report,
)


@command
def benchmark(
    artifact: Optional[Path] = typer.Argument(None, help="Calibrated artifact directory; default: the recipe's."),
    config: Optional[Path] = CONFIG,
    data: Optional[str] = DATA, text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    label_column: Optional[str] = LABEL, max_samples: Optional[int] = MAXS,
    tokens_column: Optional[str] = TOKENS, tags_column: Optional[str] = TAGS,
    data_config: Optional[str] = DCONF, split_map: Optional[str] = SPLIT_MAP,
    split: Optional[str] = field_option(BenchmarkConfig, "split"),
    timing_samples: Optional[int] = field_option(BenchmarkConfig, "timing_samples"),
    repeats: Optional[int] = field_option(BenchmarkConfig, "repeats"),
    threads: Optional[int] = field_option(BenchmarkConfig, "threads"),
    metric: Optional[str] = field_option(BenchmarkConfig, "metric", "--metric"),
    batch_size: Optional[int] = field_option(BenchmarkConfig, "timing_batch_size"),
    runtime: Optional[str] = field_option(BenchmarkConfig, "runtime", "--runtime", "--engine", extra=" (--engine is its old name)"),
    onnx_dir: Optional[str] = field_option(BenchmarkConfig, "onnx_dir", default_flag=False),
    ort_pool: Optional[str] = field_option(BenchmarkConfig, "ort_pool", "--ort-pool"),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE,
    as_json: bool = JSON,
):
    """Compare the early-exit model with the deployed model, static truncation and the oracle."""
    r = recipe_of(config)
    artifact = Path(need(artifact or r.artifact, "artifact", "ARTIFACT"))
    if batch_size is not None:
        check_batch_size(batch_size)
    cfg = given(r.benchmark, split=split, timing_samples=timing_samples, repeats=repeats, threads=threads,
                timing_batch_size=batch_size, runtime=runtime, onnx_dir=onnx_dir, metric=metric, ort_pool=ort_pool)
    from .. import steps

    flags = data_flags(text_column, pair_column, label_column, max_samples, data_config, split_map,
                       tokens_column, tags_column)
    report = steps.benchmark(artifact, data_opts(r.data if config else None, data, flags),
                             cfg, UI(quiet=as_json), device=device_opts(r, device, dtype), backbone=backbone,
                             data_flags=flags)
    print_report(artifact, report, as_json)
    emit(report, as_json)
