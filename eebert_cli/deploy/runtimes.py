"""Runtimes: what executes a calibrated artifact, registered by name (``--runtime``, ``[benchmark] runtime``).

A runtime answers two calls on token-id tensors (``mask`` None: one unpadded example,
the batch-1 path): the deployed model's logits, and the early-exit model's logits and
exit index per row. ``benchmark`` times them, ``serve`` answers requests with them; both
look the runtime up here, so a new one (TensorRT, a Triton model repository...) is one
class with ``@RUNTIMES.register("name")``, and ``tests/test_runtimes.py`` checks that it
takes the PyTorch runtime's exits.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ..core.errors import EebertError
from ..core.registry import Registry


class Runtime:
    """Interface over a loaded artifact (its reference model is the deployed one) and, unless only the
    deployed model is served, its loaded ``EarlyExitModel``."""

    #: inputs are read on the host (numpy) rather than on the model's device
    host_inputs: ClassVar[bool] = False
    #: whether it runs the artifact's PyTorch backbone; False: its own graphs answer, so a server loads
    #: the backbone only to hash-check it and then frees its weights (``Artifact.release``)
    runs_backbone: ClassVar[bool] = True

    def __init__(self, artifact, model=None, onnx_dir: str | Path = "", threads: int = 0, deployed: bool = True):
        """``deployed``: also get ready to run the deployed model (a server of the early-exit model does not)."""
        self.artifact, self.model = artifact, model
        #: how what this runtime runs differs from the model the calibration scored (None: it does not), for a
        #: benchmark or a server to say (``differs_for``)
        self.differs: str | None = type(self).differs_for(artifact, onnx_dir)

    @classmethod
    def scored_placement(cls, model) -> dict:
        """Where ``exit_logits`` computes, for a calibration record: by default where ``model`` is placed."""
        from ..model.device import placement_of

        return placement_of(model).record()

    @classmethod
    def differs_for(cls, artifact, onnx_dir: str | Path = "") -> str | None:
        """What to say beside this runtime's figures or answers for ``artifact`` where its thresholds were chosen on
        another model's outputs (``scoring_differs``); None where they were not."""
        return scoring_differs(cls.registry_name, artifact)

    @classmethod
    def check(cls, artifact_path: Path, onnx_dir: str | Path = "", deployed: bool = False) -> None:
        """Refuse, in one line and before any backbone work, what this runtime could not run (a stale export;
        ``deployed``: only the deployed model is asked of it)."""

    @classmethod
    def tagger(cls, artifact, onnx_dir: str | Path = "", threads: int = 0):
        """What tags texts for a tagger's loaded ``artifact`` on this runtime (``model/tagger_runtime.Tagger``'s rows)."""
        raise EebertError(f"the {cls.registry_name} runtime runs sentence classifiers, not taggers",
                          "serve a tagger with --runtime pytorch or onnxruntime")

    @classmethod
    def exit_logits(cls, artifact, examples, advance, threads: int = 0) -> list[np.ndarray]:
        """Every exit's logits and the deployed head's for each example (``examples``: token ids and token types
        per example), one at a time and unpadded, as this runtime computes them: [K + 1, C] per sentence,
        [K + 1, T, C] per token of a tagger's sentence. What ``calibrate --runtime`` chooses thresholds on.
        PyTorch's are the batched simulation's (``scoring/outputs.split_outputs``, ``scoring/tagging.split_tags``);
        a runtime that cannot score says so in one line."""
        raise EebertError(f"the {cls.registry_name} runtime cannot score validation itself",
                          "calibrate with --runtime pytorch")

    @classmethod
    def scored_by(cls, artifact, onnx_dir: str | Path = "") -> str:
        """Whose outputs a benchmark of this runtime scores (accuracy, agreement, FLOPs): its own where it can
        compute what it runs (``exit_logits``), else PyTorch's."""
        return "pytorch"

    @classmethod
    def version(cls) -> str:
        """What its outputs depend on besides the artifact (a library's version): part of a cached split's key."""
        return ""

    def deployed(self, ids, mask, types):
        """Logits [B, C] of the deployed model as shipped."""
        raise NotImplementedError

    def early_exit(self, ids, mask, types, mode: str = "per-sample"):
        """(logits [B, C], exit index per row) of the early-exit model; ``mask`` None: one unpadded row."""
        raise NotImplementedError


RUNTIMES: Registry[type[Runtime]] = Registry("runtime")


@RUNTIMES.register("pytorch")
class PyTorchRuntime(Runtime):
    """The layer loop of ``runtime.EarlyExitModel`` on the model's device; the deployed model as transformers runs it."""

    def __init__(self, artifact, model=None, onnx_dir="", threads=0, deployed=True):
        super().__init__(artifact, model, onnx_dir)
        self.hf = artifact.reference.model

    @classmethod
    def tagger(cls, artifact, onnx_dir="", threads=0):
        from ..model.tagger_runtime import Tagger

        return Tagger(artifact)

    @torch.inference_mode()
    def deployed(self, ids, mask, types):
        return self.hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    def early_exit(self, ids, mask, types, mode="per-sample"):
        if mask is None:
            logits, k = self.model.forward_one(ids, types)
            return logits, [k]
        return self.model.forward_batch(ids, mask, types, mode=mode)


@RUNTIMES.register("onnxruntime")
class OnnxRuntime(Runtime):
    """The ONNX segment graphs `eebert export` writes (``ARTIFACT/onnx`` unless ``onnx_dir``), on the CPU."""

    host_inputs = True
    runs_backbone = False

    @classmethod
    def check(cls, artifact_path, onnx_dir="", deployed=False):
        import importlib.util

        from .onnx_runtime import check_export, require_export

        if importlib.util.find_spec("onnxruntime") is None:  # said now, not when the first session opens
            raise EebertError("the ONNX runtime needs onnxruntime", "pip install 'eebert[onnx]'")
        folder = Path(onnx_dir or Path(artifact_path) / "onnx")
        if deployed:  # its deployed graph does not depend on the calibration
            require_export(folder)
        else:
            check_export(folder, Path(artifact_path))

    @classmethod
    def tagger(cls, artifact, onnx_dir="", threads=0):
        from .onnx_tagger import OnnxTagger

        return OnnxTagger(artifact, onnx_dir or None, threads)

    @classmethod
    def exit_logits(cls, artifact, examples, advance, threads=0):
        from .onnx_scratch import ScratchExport

        with ScratchExport(artifact, threads=threads or torch.get_num_threads()) as scratch:
            rows = []
            for ids, types in examples:
                one = np.array([ids], dtype=np.int64)
                rows.append(scratch.ox.every_exit(one, np.zeros_like(one) if types is None
                                                  else np.array([types], dtype=np.int64)))
                advance(1)
        return rows

    @classmethod
    def scored_placement(cls, model):
        return {"device": "cpu", "dtype": "float32"}  # its graphs, exported from the fp32 weights, on the CPU

    @classmethod
    def _precisions(cls, artifact, onnx_dir="") -> tuple[Path, str | None, str]:
        """The export's folder, its graphs' precision (None: no export there) and the calibration's."""
        from ..model.artifact import read_json
        from .onnx_runtime import MANIFEST

        folder = Path(onnx_dir or Path(artifact.path) / "onnx")
        graphs = (read_json(folder / MANIFEST).get("quantize") or "fp32") if (folder / MANIFEST).is_file() else None
        return folder, graphs, (artifact.calibration.quantize if artifact.calibration is not None else None) or "fp32"

    @classmethod
    def scored_by(cls, artifact, onnx_dir=""):
        _, graphs, calibrated = cls._precisions(artifact, onnx_dir)
        # graphs at the calibration's precision: the scratch export is theirs; else PyTorch's (differs_for says so)
        return "onnxruntime" if graphs == calibrated else "pytorch"

    @classmethod
    def version(cls):
        from importlib.metadata import version

        return "onnxruntime " + version("onnxruntime")

    @classmethod
    def differs_for(cls, artifact, onnx_dir=""):
        folder, graphs, scored = cls._precisions(artifact, onnx_dir)
        if graphs is None:
            return None  # no export: the runtime refuses it in its own words
        if graphs != scored:
            return (f"the ONNX export in {folder} is {graphs} and the calibration was made on the {scored} backbone: "
                    f"accuracy and FLOPs are the {scored} PyTorch model's, only the timing is the {graphs} graphs' "
                    f"(calibrate with --quantize {graphs if graphs != 'fp32' else 'none'}, or export at the "
                    "calibration's precision)")
        return scoring_differs("onnxruntime", artifact)

    def __init__(self, artifact, model=None, onnx_dir="", threads=0, deployed=True):
        super().__init__(artifact, model, onnx_dir)
        from .onnx_runtime import OnnxEarlyExit

        folder = Path(onnx_dir or artifact.path / "onnx")
        self.check(artifact.path, folder, deployed=model is None)  # early exit: graphs of another calibration refused
        self.ox = OnnxEarlyExit(folder, threads=threads or torch.get_num_threads(), deployed=deployed or model is None)
        if model is not None and self.ox.manifest["exit_layers"] != model.exit_layers:
            raise EebertError(f"the ONNX export in {folder} is not of this artifact", "re-run `eebert export`")

    @staticmethod
    def _host(ids, mask, types):
        i = ids.numpy() if isinstance(ids, torch.Tensor) else ids
        t = np.zeros_like(i) if types is None else (types.numpy() if isinstance(types, torch.Tensor) else types)
        m = None if mask is None else (mask.numpy() if isinstance(mask, torch.Tensor) else mask)
        return i, m, t

    def deployed(self, ids, mask, types):
        i, m, t = self._host(ids, mask, types)
        return self.ox.forward_deployed(i, np.ones_like(i) if m is None else m, t)

    def early_exit(self, ids, mask, types, mode="per-sample"):
        i, m, t = self._host(ids, mask, types)
        if m is None:
            logits, k = self.ox.forward_one(i, t)
            return logits, [k]
        return self.ox.forward_batch(i, m, t, mode=mode)


def scoring_differs(scored_by: str, artifact) -> str | None:
    """What a benchmark or server of ``scored_by`` says when the thresholds were chosen on another runtime's
    outputs (None: the same, or fp32 PyTorch and ONNX Runtime, which agree to rounding)."""
    cal = artifact.calibration
    chosen = (cal.runtime if cal is not None else None) or "pytorch"
    quantize = cal.quantize if cal is not None else None
    if chosen == scored_by or (quantize is None and {chosen, scored_by} == {"pytorch", "onnxruntime"}):
        return None
    what = f"{quantize} outputs" if quantize else "outputs"
    return (f"the thresholds were chosen on {chosen}'s {what}, and {scored_by}'s round differently: on {scored_by} "
            f"the operating point may sit off its target (calibrate with --runtime {scored_by})")


def runtime_for(name: str, artifact, model=None, onnx_dir: str | Path = "", threads: int = 0,
                deployed: bool = True) -> Runtime:
    """The runtime called ``name`` over ``artifact`` (and ``model``; an unknown name: one line with the closest)."""
    return RUNTIMES.get(name)(artifact, model, onnx_dir, threads, deployed)
