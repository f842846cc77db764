"""`eebert export`: ONNX graphs for onnxruntime."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..core.ui import UI, out
from ..model.quantize import check_scheme
from .shared import command, emit, JSON, CONFIG, recipe_of, need


@command
def export(
    artifact: Optional[Path] = typer.Argument(None, help="Calibrated artifact directory; default: the recipe's."),
    config: Optional[Path] = CONFIG,
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder to write (default ARTIFACT/onnx)."),
    quantize: Optional[str] = typer.Option(None, help="Quantize the graphs with onnxruntime's dynamic int8."),
    backbone: Optional[str] = typer.Option(None, help="Backbone checkpoint, if it moved since attach (hash-checked)."),
    as_json: bool = JSON,
):
    """Export the early-exit model as ONNX segment graphs, the one-graph early exit where the criterion allows
    (early-exit.onnx), and the deployed model, for onnxruntime."""
    artifact = Path(need(artifact or recipe_of(config).artifact, "artifact", "ARTIFACT"))
    check_scheme(quantize)
    from .. import steps  # here, after the flags are checked: bad input is refused before torch loads
    result = steps.export(artifact, out_dir, quantize, backbone, UI(quiet=as_json))
    emit(result, as_json)
    if not as_json:
        fused = ", the whole forward as one graph (early-exit.onnx)" if result.get("fused") else ""
        out.print(f"exported {result['segments']} segment graphs (exits {result['exported_exits']}){fused} and the "
                  f"deployed model{' (int8)' if result['quantize'] else ''} -> {result['out']}")
