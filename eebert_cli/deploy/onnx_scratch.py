"""A temporary ONNX export of an artifact with every exit live: what eebert runs when it needs ONNX Runtime's
own view of the exits before the user exports (``calibrate --latency-runtime onnxruntime`` times it,
``calibrate --runtime onnxruntime`` scores validation with it).

The artifact's records are copied to a temporary folder (its backbone is referenced, not copied), given a
calibration whose thresholds score every exit and let none fire, and exported at the artifact's
precision (int8 graphs for an artifact quantized to int8), the way ``eebert export`` will export it.
The folder is eebert's own and is removed on close.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..core.errors import EebertError

#: a threshold every finite score passes (the exit fires after scoring), and one none passes (it is
#: scored and never fires); INF / -INF mean "leave without scoring" / "not evaluated" to the runtime
FIRES, SCORED = 1e38, -1e38  # within float32, which the ONNX graphs compare in


def check_exportable(artifact, criterion, flag: str, instead: str) -> None:
    """Refuse, in one line and before any backbone work, what the ONNX exporter cannot export (``flag``: the
    option that asked for ONNX Runtime; ``instead``: what to do)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise EebertError(f"{flag} needs the onnx and onnxruntime packages", "pip install 'eebert[onnx]'") from None
    exits = artifact.exits
    if exits.reduction not in ("cls", "mean", "word") or exits.bypass is not None or exits.gates is not None \
            or criterion.needs_features:
        raise EebertError(f"{flag} runs an ONNX export, which takes exits that read [CLS], the mean or a tagger's "
                          "words, without gates or bypasses, and criteria that read only logits", instead)


class ScratchExport:
    """``artifact`` exported with every exit live to a temporary folder; ``ox`` runs it (``OnnxEarlyExit``).
    ``criterion``: the one whose score the graphs compute (the latency profile times it); None, where only the
    logits are read: the task's default. Use as a context manager, or call ``close``."""

    def __init__(self, artifact, criterion=None, threads: int = 0):
        from ..criteria import build_criterion
        from ..model.artifact import CALIBRATION, WEIGHTS, derivation
        from ..model.calibration import Calibration
        from ..tasks import task_of
        from .onnx_export import export
        from .onnx_runtime import OnnxEarlyExit

        if criterion is None:
            criterion = build_criterion(task_of(artifact.deployed.model.config).criterion, {}, artifact)

        self.tmp = Path(tempfile.mkdtemp(prefix="eebert-onnx-"))
        try:
            art = self.tmp / "artifact"
            art.mkdir()
            for f in Path(artifact.path).iterdir():  # the artifact's own records (its backbone is referenced)
                if f.is_file() and f.name != CALIBRATION and not f.name.startswith("."):
                    shutil.copy2(f, art / f.name)
            n = len(artifact.exits.layers)
            Calibration(criterion=criterion.registry_name, criterion_params=criterion.params(),
                        thresholds=[SCORED] * n, quantize=artifact.quantize, **derivation(art, WEIGHTS)).save(art)
            export(art, self.tmp / "onnx", quantize=artifact.quantize)
            # the segments only: scoring runs them one by one, the latency profile too (its deployed path loads
            # the deployed graph on first use); the fused graph would be one more copy of the weights in memory
            self.ox = OnnxEarlyExit(self.tmp / "onnx", threads=threads, deployed=False, fused=False)
        except BaseException:  # a failed export leaves no temporary folder behind
            self.close()
            raise

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
