"""Export an early-exit model as ONNX: one graph per segment between exits.

Why segments (and not one graph with If nodes, nor optimum): the exit decision
is data dependent and per sample, so the host must look at each exit's logits
anyway; with one graph per segment the runtime runs a segment, decides, drops
the rows that left and feeds the remaining hidden states to the next segment,
which is what the PyTorch runtime does. optimum's exporter (``optimum-onnx``)
requires transformers < 4.58 and exports whole models only; these graphs come
from ``torch.onnx.export`` (the TorchScript exporter, no extra dependency) on
small wrappers around the backbone adapter, so any adapter eebert supports
exports the same way.

    OUT/
      manifest.json     criterion, thresholds of the exported exits, segments, labels
      segment-0.onnx    input_ids, attention_mask, token_type_ids -> hidden, logits (exit 0), carried state
      segment-k.onnx    hidden_in, attention_mask, carried state -> hidden, logits (next exit; the last: deployed head)
      deployed.onnx     the deployed model, whole (the baseline, built by the same exporter)
      early-exit.onnx   the whole early-exit forward in one graph (stateless criteria; onnx_fuse.py)
      weights.bin       every graph's large weights, one copy of each (onnx_weights.py)

A tagger's artifact (reduction "word") exports the same way, per token: each segment
outputs its hidden states and the exit head's tag logits for every position [B, T, C], the
last segment and ``deployed.onnx`` the deployed tagger's own classifier. Its sentence score
is computed on the host (``model/tagger_runtime.sentences_leaving``), since it reads which
positions carry a word's tag, which only the host's word alignment knows.

The state the layers and exits read besides the hidden states is built once, by segment 0, and
carried from segment to segment by the host (``CARRY``): the additive padding mask when the
adapter's layer state is that one tensor, and the mean-pooling weights when the exits read a mean.
Later segments then run no kernels to rebuild them (at batch size 1 those kernels and the
masked mean were ~10% of an int8 one-layer call). Families whose layer state holds more (relative
positions, rotary tables) rebuild it in each segment from ``attention_mask``, as before. A
tagger's segments carry nothing (its host loop feeds each segment its hidden states and mask).

With a stateless criterion (entropy, maxprob) each segment also outputs the
exit score, traced from the criterion's own ``step``, so the host only
compares it with the threshold; a stateful one (patience) runs ``step`` on the
host. Only exits that can fire are exported as boundaries: with a stateless criterion
an exit calibrated "never" is folded into its segment. The graphs follow one
calibration; re-export after re-calibrating (the manifest records which).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..model.artifact import (CALIBRATION, TMP_TAG, Artifact, artifact_lock, derivation, file_mode, file_sha256,
                              load_artifact, read_config, write_json)
from ..model.calibration import INF, skipped_exits, thresholds_from_json, thresholds_to_json
from ..backbones.base import BackboneAdapter
from ..core.atomic import check_writable, replace_folder
from ..core.errors import EebertError
from ..core.ui import SILENT, UI
from ..exits import reduce
from .onnx_runtime import MANIFEST  # the format the onnxruntime runtime reads
from .onnx_weights import WEIGHTS, save_sharing_weights
from ..model.quantize import check_scheme
from ..model.token_features import tag_logits

#: 2: carried state (mask_state, pool) between segments; 3: the fused graph (onnx_fuse.py); 4: the graphs'
#: weights once, in WEIGHTS (onnx_weights.py)
ONNX_FORMAT = 4
#: the whole early-exit forward in one graph (stateless criteria): inputs as segment 0's, outputs logits and exit
FUSED = "early-exit.onnx"
DEPLOYED = "deployed.onnx"
OPSET = 17


#: what segment 0 outputs and later segments read, besides the hidden states; each has the batch on
#: axis 0 and the sequence on its last axis (the runtime drops rows and trims padding by that rule)
CARRY = {"mask_state": {0: "batch", 3: "seq"}, "pool": {0: "batch", 2: "seq"}}


def mean_weights(mask: torch.Tensor) -> torch.Tensor:
    """[B, T] 0/1 mask -> [B, 1, T] weights whose product with the hidden states is ``reduce("mean")``
    (one MatMul in the graph instead of masking, two sums and a division at every exit)."""
    m = mask[:, None, :].float()
    return m / m.sum(-1, keepdim=True).clamp_min(1.0)


class Segment(nn.Module):
    """Layers ``start..end-1`` (0-based) of the backbone, then exit ``head`` (None: the deployed head).

    ``carry``: names from CARRY this export passes between segments; the first segment outputs them,
    the others take them as inputs after ``attention_mask``."""

    def __init__(self, artifact: Artifact, start: int, end: int, head: nn.Module | None, first: bool,
                 criterion=None, carry: tuple[str, ...] = ()):
        super().__init__()
        self.criterion = criterion  # stateless criteria: the score is computed in the graph too
        self.ad = artifact.deployed.adapter
        self.start, self.end, self.first = start, end, first
        self.head = head
        self.reduction = artifact.exits.reduction
        self.model = artifact.deployed.model  # registered so parameters are exported
        self.exits = artifact.exits
        self.tags = self.reduction == "word"  # a tagger: tag logits per token, its own classifier last
        self.carry = carry

    def forward(self, a: torch.Tensor, mask: torch.Tensor, *extra: torch.Tensor):
        """First segment: (input_ids, attention_mask[, token_type_ids]); others: (hidden, attention_mask, *carried)."""
        ad = self.ad
        if self.first:
            hidden = ad.embed(a, mask, extra[0] if extra else None)
            got = {k: ad.export_state(hidden, mask) if k == "mask_state" else mean_weights(mask) for k in self.carry}
        else:
            hidden, got = a, dict(zip(self.carry, extra))
        state = got["mask_state"] if "mask_state" in got else ad.export_state(hidden, mask)
        for i in range(self.start, self.end):
            hidden = ad.layer(i, hidden, state)
        if self.head is None:
            out = (tag_logits(self.model, hidden) if self.tags else ad.head(hidden, mask),)
        else:
            # exits read float32 (as reduce does); no cast of fp32 states: it would copy them in the graph
            h32 = hidden if hidden.dtype == torch.float32 else hidden.float()
            x = torch.matmul(got["pool"], h32).squeeze(1) if "pool" in got else reduce(self.reduction, hidden, mask)
            logits = self.head(x)
            out = (hidden, logits) + ((self.criterion.step(logits, {})[0],) if self.criterion is not None else ())
        return out + tuple(got.values()) if self.first else out


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            per_token: bool = False) -> None:
    """``per_token``: the logits are per position [B, T, C] (a tagger's), not per example."""
    axes = {"input_ids": {0: "batch", 1: "seq"}, "token_type_ids": {0: "batch", 1: "seq"},
            "attention_mask": {0: "batch", 1: "seq"}, "hidden_in": {0: "batch", 1: "seq"},
            "hidden": {0: "batch", 1: "seq"}, "logits": {0: "batch"}, "score": {0: "batch"}, **CARRY}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if per_token:
            axes["logits"] = {0: "batch", 1: "seq"}
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes={n: axes[n] for n in inputs + outputs}, opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)


def ancestors(graph, outputs: list[str]) -> set[str]:
    """Names of the nodes of an ONNX ``graph`` that ``outputs`` depend on."""
    made = {o: n for n in graph.node for o in n.output}
    seen, todo = set(), list(outputs)
    while todo:
        n = made.get(todo.pop())
        if n is not None and n.name not in seen:
            seen.add(n.name)
            todo += list(n.input)
    return seen


def exit_nodes(graph) -> tuple[set[str], set[str]]:
    """A segment's exit, as node names: (head: what its logits need and its hidden state does not,
    score: what only the score needs). Empty for the last segment and the deployed graph."""
    outs = {o.name for o in graph.output}
    if "hidden" not in outs:
        return set(), set()
    hidden, logits = ancestors(graph, ["hidden"]), ancestors(graph, ["logits"])
    score = ancestors(graph, ["score"]) - logits - hidden if "score" in outs else set()
    return logits - hidden, score


def quantize_graph(path: Path) -> None:
    """Dynamic int8 (weights int8, activations quantized on the fly) with onnxruntime's quantizer.

    The exit heads' Linears are quantized with the layers: at batch size 1 a head's first Linear is a
    matrix-vector product whose time is moving its weights, and int8 moves a quarter of fp32's bytes
    (+4% early exit against the deployed graph at batch 1 on the demo, docs/inference.md, "Twelfth
    pass"). PyTorch's int8 keeps its heads fp32 (quantize.py: there int8 heads were no faster), so the
    two engines' int8 exit scores differ a little more than their layers make them. The exit score's
    nodes stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    _, score = exit_nodes(onnx.load(str(path), load_external_data=False).graph)
    tmp = path.with_suffix(".int8.onnx")
    with _root_quiet_in_this_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, nodes_to_exclude=sorted(score))
    tmp.replace(path)


@contextmanager
def _root_quiet_in_this_thread():
    """Drop what this thread logs on the root logger below ERROR: onnxruntime's quantizer logs its advice to
    pre-process there, once per graph. A filter (not the root's level) leaves other threads' records and
    other loggers alone; a handler held meanwhile keeps ``logging.warning`` from installing one for good
    (``basicConfig``) in a process that configured none."""
    root, me = logging.getLogger(), threading.get_ident()

    def quiet(r: logging.LogRecord) -> bool:
        return r.levelno >= logging.ERROR or r.thread != me

    held = logging.NullHandler() if not root.handlers else None
    root.addFilter(quiet)
    if held is not None:
        root.addHandler(held)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        if held is not None:
            root.removeHandler(held)


def export(artifact_dir: str | Path, out: str | Path | None = None, quantize: str | None = None,
           backbone: str | Path | None = None, ui: UI = SILENT) -> dict:
    """The ONNX export (docs/inference.md); ``ui`` shows its progress, a graph (and its quantization) a step."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise EebertError("ONNX export needs the onnx package", "pip install 'eebert[onnx]'") from None
    quantize = check_scheme(quantize)
    with artifact_lock(artifact_dir, "export"):  # the calibration it follows cannot change meanwhile
        return _export_locked(artifact_dir, out, quantize, backbone, ui)


def check_export_out(out: Path, checkpoint: Path) -> None:
    """An existing ``out`` must be an earlier export (eebert's manifest, graphs only) or empty: it is replaced whole."""
    from ..model.artifact import check_out, is_export

    check_out(out, checkpoint, overwrite=True)
    if out.is_dir() and any(TMP_TAG not in e.name for e in out.iterdir()) and not is_export(out):
        raise EebertError(f"--out {out} is not an eebert ONNX export (no manifest.json of eebert's), and an export "
                          "replaces its folder whole", "choose a new folder for the export, or empty this one")
    if out.is_dir():
        other = sorted(e.name for e in out.iterdir()
                       if not (e.name in (MANIFEST, WEIGHTS) or e.suffix == ".onnx" or TMP_TAG in e.name))
        if other:
            raise EebertError(f"--out {out} holds files that are not an eebert ONNX export (e.g. {other[0]})",
                              "choose a new folder for the export, or empty this one")


def _export_locked(artifact_dir, out, quantize, backbone, ui: UI) -> dict:
    out = Path(out) if out else Path(artifact_dir) / ("onnx-" + quantize if quantize else "onnx")
    check_writable(out.parent, f"the export {out}")  # before the model loads, as is what the config tells
    config = read_config(artifact_dir)
    not_calibrated = EebertError(f"{artifact_dir} is not calibrated yet", "run `eebert calibrate` before `eebert export`")
    if not (Path(artifact_dir) / CALIBRATION).is_file():
        raise not_calibrated
    if config["exits"].get("gates"):
        raise EebertError("ONNX export does not support skipping gates (each gated layer is a branch per example)",
                          "serve this artifact with PyTorch (`eebert predict`), or attach without gates to export")
    check_export_out(out, Path(backbone or config["backbone"]["path"]).expanduser())
    art = load_artifact(artifact_dir, backbone)
    cal = art.calibration
    if cal is None:  # a stale one is not loaded
        raise not_calibrated
    from ..criteria import build_criterion

    criterion = build_criterion(cal.criterion, cal.criterion_params, art)
    tags = art.exits.reduction == "word"  # a tagger's per-token exits
    if art.exits.reduction not in ("cls", "mean", "word") or art.exits.bypass is not None or criterion.needs_features:
        raise EebertError("ONNX export supports exits that read one pooled reduction ([CLS] or mean) or every "
                          "token (taggers), without bypasses, and criteria that read only logits",
                          "export an artifact with linear / pooler-mlp / mean-mlp exits, or serve this one with PyTorch")
    thresholds = thresholds_from_json(cal.thresholds)
    stateless = criterion.stateless
    traced = stateless and not tags  # a tagger's score needs the word alignment: the host computes it
    skip = skipped_exits(thresholds, stateless)
    live = [k for k in range(len(thresholds)) if k not in skip]
    dims = art.deployed.adapter.dims
    check_export_out(out, art.reference.path)  # again where the backbone was found (a hub id resolved here)
    bounds = [(art.exits.layers[k], k) for k in live] + [(dims.num_layers, len(art.exits.layers))]
    fused = traced and len(bounds) > 1  # the exit decision fits in the graph: one graph for the whole forward
    # a step per graph traced (segments, deployed), per graph quantized, and the fused graph
    work = (len(bounds) + 1) * (2 if quantize else 1) + fused
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}{TMP_TAG}"))
    try:
        with ui.progress(f"export: {len(bounds)} segment graphs and the deployed model{' (int8)' if quantize else ''}",
                         work) as advance:
            # trace on a padded batch of two so nothing specialises to "no padding" or batch 1
            ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102], [101, 2023, 102, 0, 0, 0]]) % \
                art.deployed.model.config.vocab_size
            mask = (torch.arange(6)[None] < torch.tensor([[6], [3]])).long()
            types = torch.zeros_like(ids)
            # carried between segments: the padding mask when it is the layers' whole state, the mean weights
            default_state = type(art.deployed.adapter).export_state is BackboneAdapter.export_state
            carry = () if tags else tuple(k for k, fits in (("mask_state", default_state),
                                                            ("pool", art.exits.reduction == "mean")) if fits)
            segments, start = [], 0
            hidden, carried = None, {}
            for i, (end, k) in enumerate(bounds):
                last = i == len(bounds) - 1
                seg = Segment(art, start, end, None if last else art.exits.heads[k], first=i == 0,
                              criterion=criterion if traced else None, carry=carry if len(bounds) > 1 else ()).eval()
                name = f"segment-{i}.onnx"
                inputs = ["input_ids", "attention_mask", "token_type_ids"] if i == 0 else \
                    ["hidden_in", "attention_mask", *seg.carry]
                outputs = ["logits"] if last else ["hidden", "logits"] + (["score"] if traced else [])
                outputs += list(seg.carry) if i == 0 else []
                args = (ids, mask, types) if i == 0 else (hidden, mask, *(carried[c] for c in seg.carry))
                _export(seg, args, tmp / name, inputs, outputs, tags)
                advance(1)
                if not last:
                    with torch.no_grad():
                        got = seg(*args)
                    hidden = got[0]
                    if i == 0:  # what segment 0 hands on (its last outputs)
                        carried = dict(zip(seg.carry, got[len(got) - len(seg.carry):]))
                threshold = thresholds_to_json([INF if last else thresholds[k]])[0]
                segments.append({"file": name, "layers": [start + 1, end], "exit": k, "inputs": inputs,
                                 "outputs": outputs, "threshold": threshold})
                start = end
            whole = Segment(art, 0, dims.num_layers, None, first=True).eval()
            _export(whole, (ids, mask, types), tmp / DEPLOYED, ["input_ids", "attention_mask", "token_type_ids"],
                    ["logits"], tags)
            advance(1)
            if quantize:
                for f in sorted(tmp.glob("*.onnx")):
                    quantize_graph(f)
                    advance(1)
            import onnx

            graphs = {name: onnx.load(str(tmp / name)) for name in [s["file"] for s in segments] + [DEPLOYED]}
            if fused:
                from .onnx_fuse import fuse

                graphs[FUSED] = fuse(tmp, {"segments": segments, "carry": list(carry), "num_labels": dims.num_labels})
                advance(1)
            for e in tmp.iterdir():  # what the exporter wrote beside a large graph (its weights) is in `graphs` now
                if e.name not in graphs:
                    e.unlink()
        weights_bytes = save_sharing_weights(tmp, graphs)
        if fused:
            onnx.checker.check_model(str(tmp / FUSED))  # by path: its weights are external
        cal_sha = file_sha256(Path(artifact_dir) / CALIBRATION)
        manifest = {
            "format_version": ONNX_FORMAT, "opset": OPSET, "quantize": quantize,
            "task": art.config.get("task"), "logits": "per-token" if tags else "per-example",
            "backbone_quantize_at_calibration": cal.quantize,
            "exit_heads_quantize": quantize,  # exports before this key kept the heads fp32 under int8
            "criterion": cal.criterion, "criterion_params": cal.criterion_params or {},
            "num_exits": len(art.exits.layers), "exit_layers": art.exits.layers + [dims.num_layers],
            "segments": segments, "carry": list(carry) if len(bounds) > 1 else [],
            "deployed": DEPLOYED, "weights": WEIGHTS, **({"fused": FUSED} if fused else {}), "labels": art.config["labels"],
            "max_length": art.config["max_length"], "num_labels": dims.num_labels,
            "calibration_sha256": cal_sha,  # the graphs follow this calibration; stale ones are refused
            **derivation(Path(artifact_dir), CALIBRATION, known={CALIBRATION: cal_sha}),
        }
        write_json(tmp / MANIFEST, manifest)
        os.chmod(tmp, file_mode(0o777))  # mkdtemp makes 0700; the user's umask decides
        replace_folder(tmp, out)  # an earlier export (check_export_out) is swapped out, then dropped
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": str(out), "segments": len(segments), "exported_exits": [s["exit"] for s in segments[:-1]],
            "fused": FUSED if fused else None, "quantize": quantize, "weights_bytes": weights_bytes}
