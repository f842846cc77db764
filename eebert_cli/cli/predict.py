"""`eebert predict`: labels (or tags) for texts or a data file, in process or on Ray."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.checks import check_batch_size
from ..core.ui import UI, out
from .shared import (
    command, emit, JSON, CONFIG, recipe_of, given, TEXT, PAIR, DEVICE, DTYPE, EXECUTOR, RAY_ADDRESS,
    device_opts,
)


@command
def predict(
    artifact: Path = typer.Argument(..., help="Calibrated artifact directory."),
    texts: Optional[list[str]] = typer.Argument(None, help="Texts to classify."),
    config: Optional[Path] = CONFIG,
    input_file: Optional[Path] = typer.Option(None, "--input", "-i", help="Data file (CSV/TSV/JSONL/parquet) with a text column; streamed in chunks."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write one prediction per input row to this .jsonl/.csv/.parquet file (streamed, atomic: complete or absent); with --executor ray, a folder of parquet parts."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output file."),
    text_column: Optional[str] = TEXT, pair_column: Optional[str] = PAIR,
    batch_size: int = typer.Option(1, help="Examples per forward pass (per-sample exits when > 1)."),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    device: Optional[str] = DEVICE, dtype: Optional[str] = DTYPE, executor: Optional[str] = EXECUTOR,
    ray_address: Optional[str] = RAY_ADDRESS,
    token_threshold: Optional[float] = typer.Option(
        None, help="Taggers: the per-token exit instead of the calibrated per-sentence one; a word halts at the "
                   "first exit whose top tag probability reaches this (CPU, one sentence at a time)."),
    token_exit: bool = typer.Option(False, "--token-exit", help="Taggers: the per-token exit at the threshold "
                                    "`calibrate --token-exit` chose (--token-threshold overrides it)."),
    as_json: bool = JSON,
):
    """Classify texts with the early-exit model."""
    r = recipe_of(config)
    dcfg = given(r.data, text_column=text_column, pair_column=pair_column)
    dev = device_opts(r, device, dtype, executor, ray_address)
    check_batch_size(batch_size)
    from .. import steps  # here, after the flags are checked: bad input is refused before torch loads
    result = steps.predict(artifact, texts, input_file=input_file, output=output, overwrite=overwrite,
                           text_column=dcfg.text_column, pair_column=dcfg.pair_column, batch_size=batch_size,
                           backbone=backbone, device=dev, ui=UI(quiet=as_json), token_threshold=token_threshold,
                           token_exit=token_exit)
    if "workers" in result:  # an executor's actor pool (ray): a folder of parquet parts
        emit(result, as_json)
        if not as_json:
            out.print(f"predicted {result['rows']} rows on {result['workers']} {dev.executor} workers -> "
                      f"{result['output']}")
        return
    if output is not None:
        emit(result, as_json)
        if not as_json:
            out.print(f"{result['rows']} predictions -> {output} ({result['rows_per_second']} rows/s)")
        return
    rows_out = result["rows"]  # printed whole: for large files use --output
    if as_json:
        emit([{k: v for k, v in row.items() if k != "row"} for row in rows_out], True)
        return
    from rich.table import Table

    if rows_out and "entities" in rows_out[0]:  # a tagger: entity spans per text
        t = Table("entities", "exit layer", "text")
        for row in rows_out:
            t.add_row(", ".join(f"{e['text']} ({e['entity']} {e['score']:.2f})" for e in row["entities"]) or "-",
                      f"{row['exit_layer']}/{result['num_layers']}", row["text"][:70])
        out.print(t)
        return
    t = Table("label", "exit layer", "confidence", "text")
    for row in rows_out:
        text = row.get("text", "")
        t.add_row(row["label"], f"{row['exit_layer']}/{result['num_layers']}", f"{max(row['probs']):.3f}",
                  text[:70] + ("…" if len(text) > 70 else ""))
    out.print(t)
