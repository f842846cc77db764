"""A tagger's ONNX export driven by onnxruntime: the PyTorch tagger's rows, from the segment graphs.

``OnnxTagger`` is ``model/tagger_runtime.Tagger`` with the layer loop replaced by the
exported segments (``onnx_export.py``): words, batching, the answer per word and the rows
``predict`` returns (entity spans, per-token tags) are the PyTorch tagger's own code, and
each exit's decision is the same function on the graph's per-token logits
(``sentences_leaving``), so both runtimes take the same exits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.errors import EebertError
from ..model.artifact import Artifact, load_artifact
from ..model.device import cpu_threads
from ..model.tagger_runtime import Tagger, sentences_leaving
from .onnx_runtime import OnnxEarlyExit, check_export


class OnnxTagger(Tagger):
    runs_backbone = False  # the graphs hold the backbone, quantized as exported

    def __init__(self, artifact: Artifact, folder: str | Path | None = None, threads: int = 0):
        super().__init__(artifact)
        folder = Path(folder or artifact.path / "onnx")
        check_export(folder, artifact.path)  # graphs of another calibration are refused
        self.ox = OnnxEarlyExit(folder, threads=threads or torch.get_num_threads(), deployed=False)
        if self.ox.manifest.get("logits") != "per-token":
            raise EebertError(f"the ONNX export in {folder} is not a tagger's", f"re-run `eebert export {artifact.path}`")
        if self.ox.manifest["exit_layers"] != artifact.calibration.exit_layers:
            raise EebertError(f"the ONNX export in {folder} is not of this artifact", "re-run `eebert export`")
        #: 1-based layer each segment ends at (its exit's, or the last one's)
        self.segment_layers = [s["layers"][1] for s in self.ox.segments]

    #: token ids stay on the host (onnxruntime reads NumPy), wherever the PyTorch backbone is, if anywhere
    input_device = torch.device("cpu")

    @classmethod
    def from_artifact(cls, path: str | Path, backbone: str | None = None, folder: str | Path | None = None,
                      threads: int = 0) -> "OnnxTagger":
        return cls(load_artifact(path, backbone), folder, threads)

    def deployed_call(self, ids: list[list[int]], batch_size: int = 1):
        """The export's deployed graph (``deployed.onnx``), loaded on first use, ``batch_size`` sentences at a
        time (right-padded)."""
        ox = self.ox
        batches = [self._padded(ids[b:b + batch_size]) for b in range(0, len(ids), batch_size)]
        feeds = [(x.numpy(), m.numpy(), np.zeros_like(x.numpy())) for x, m in batches]

        def run() -> None:
            for f in feeds:
                ox.forward_deployed(*f)
        return run

    def _run(self, ids, mask, first, rows, out, exit_at) -> None:
        # the host's tensors are small (one sentence's tag logits): torch's thread pool only contends with
        # onnxruntime's for the cores, and a pool thread left spinning stalled 1 in 10 softmax calls by ms
        with cpu_threads(1):
            self._segments(ids, mask, first, rows, out, exit_at)

    def _segments(self, ids, mask, first, rows, out, exit_at) -> None:
        """``exit_at``: every sentence out at that exit (the deployed tagger: the last), if it was exported."""
        ox = self.ox
        if exit_at is not None and exit_at not in ox.exit_of:
            raise EebertError(f"exit {exit_at} is not in the ONNX export (exported: {ox.exit_of})",
                              "force that exit with the PyTorch tagger")
        ids, mask = ids.cpu().numpy(), mask.cpu().numpy()
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        last = len(ox.sessions) - 1
        for i in range(len(ox.sessions)):
            outs = ox.run_segment(i, feed)
            logits = torch.from_numpy(outs[-1] if i == last else outs[1])
            if i == last:
                self._answer(logits, first, rows, self.segment_layers[i], out, torch.arange(len(rows)))
                return
            hidden = outs[0]
            leave = torch.full((len(rows),), ox.exit_of[i] == exit_at) if exit_at is not None else \
                sentences_leaving(self.criterion, logits, first, ox.thresholds[i])
            if leave.any():
                self._answer(logits, first, rows, self.segment_layers[i], out, leave.nonzero().squeeze(1))
                keep = (~leave).nonzero().squeeze(1)
                if not len(keep):
                    return
                k = keep.numpy()
                hidden, mask, first = np.take(hidden, k, axis=0), np.ascontiguousarray(mask[k]), first[keep]
                rows = [rows[j] for j in keep.tolist()]
            feed = {"hidden_in": hidden, "attention_mask": mask}
