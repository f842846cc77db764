"""Load-time int8 quantization of the deployed model (dynamic, Linear layers).

The artifact's backbone hash names the fp32 checkpoint; quantization is applied
when the model is loaded, recorded in calibration.json (``"quantize": "int8"``)
so that calibration, benchmark and predict all run the same quantized backbone.
Exits stay fp32: their thresholds are calibrated on the quantized backbone's
outputs, and int8 exit heads were no faster here at batch size 1 (PyTorch's
dynamic int8 Linear has a fixed cost per call; docs/inference.md, "Twelfth pass").
The ONNX int8 export does quantize them (onnx_export.quantize_graph).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import TYPE_CHECKING

from ..core.errors import EebertError

if TYPE_CHECKING:
    from torch import nn

SCHEMES = ("int8",)


def check_scheme(scheme: str | None) -> str | None:
    """``--quantize``'s value: None for fp32 (also "none", "fp32"), else a known scheme; one line otherwise.
    This module imports torch only where it quantizes, so the CLI checks the flag before torch loads."""
    if scheme in (None, "", "none", "fp32"):
        return None
    if scheme not in SCHEMES:
        raise EebertError(f"unknown quantization {scheme!r}", f"choose one of {', '.join(SCHEMES)}")
    return scheme


def quantize_model(model: nn.Module, scheme: str | None) -> nn.Module:
    """Dynamic int8 quantization of every nn.Linear in ``model`` (the deployed HF model), in place.

    This is the standard recipe users apply to a BERT classifier in PyTorch; the
    adapter shares these modules, so the layer-by-layer path runs them too.
    """
    if check_scheme(scheme) is None:
        return model
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao deprecation notices
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)


def as_calibrated(artifact, reference: bool = True):
    """``artifact`` with its backbone quantized as its calibration was chosen on (nothing to do without one);
    ``reference`` off: no fp32 copy kept beside it (a server compares with nothing)."""
    cal = artifact.calibration
    if cal is not None and cal.quantize and getattr(artifact, "quantize", None) != cal.quantize:
        quantize_artifact(artifact, cal.quantize, reference)
    return artifact


def quantize_artifact(artifact, scheme: str | None, reference: bool = True):
    """Quantize the backbone the exits run on, keeping the shipped fp32 model as the reference (unless
    ``reference`` is off: then the artifact's reference is the quantized model).

    Every report compares with the checkpoint as shipped (fp32); the quantized
    deployed head is a row of its own (see `benchmark.flops_rows`).
    """
    import copy

    from ..backbones import adapter_for

    scheme = check_scheme(scheme)
    if scheme is None:
        return artifact
    if artifact.original is None and reference:
        model = copy.deepcopy(artifact.deployed.model)
        artifact.original = replace(artifact.deployed, model=model, adapter=adapter_for(model))
    quantize_model(artifact.deployed.model, scheme)
    artifact.quantize = scheme
    return artifact
