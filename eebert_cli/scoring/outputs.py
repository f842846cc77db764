"""The scored outputs of one split: one backbone pass, kept for calibration, benchmark, curves and compare.

``split_outputs`` runs the artifact over a split once and returns every exit's
logits, the FLOPs of leaving at each exit and what feature-reading criteria
need. ``OutputsCache`` keeps them on disk (safetensors for the tensors, JSON for
the rest; both written atomically, nothing pickled), keyed by what they depend
on: the exit weights (sha256 of exits.safetensors, gate threshold, quantization),
the split's contents (a fingerprint of its texts and labels), the backbone's
sha256 and where the backbone ran (device and dtype: bf16 on a GPU scores
differently from fp32 on the CPU). A changed artifact, split, backbone or
placement therefore never reads a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..model import artifact as art
from ..model.checkpoint import gold_labels
from ..model.cost import exit_charges, exit_costs, full_cost
from ..model.device import placement_of
from ..criteria import feature_reduction
from ..data import DataConfig, TaskData
from ..core.errors import EebertError
from ..deploy.runtimes import RUNTIMES
from ..model.features import all_exit_logits, encode, extract
from ..tasks import Task, get as get_task, task_of
from ..core.ui import SILENT, UI

CACHE_FORMAT = 1


@dataclass
class SplitOutputs:
    """Everything calibration and the benchmark need from one backbone pass over a split."""

    logits: torch.Tensor          #: [N, K, C], deployed head last
    lengths: torch.Tensor         #: [N]
    labels: torch.Tensor | None   #: gold ids, if the data has labels
    cost: torch.Tensor            #: [N, K] FLOPs when leaving at each exit
    full: torch.Tensor            #: [N] FLOPs of the deployed model
    task: Task = field(default_factory=lambda: get_task(None))  #: what the outputs mean (a name is looked up)
    features: torch.Tensor | None = None  #: [N, K-1, H] reductions feature-reading criteria read
    #: [N, C] the shipped fp32 model's own logits, when the last exit is not that model
    #: (skipping gates, a trained backbone or a quantized backbone change the path to it)
    deployed_logits: torch.Tensor | None = None
    skipped: torch.Tensor | None = None   #: [N, L] layers the gates skipped

    def __post_init__(self):
        self.task = get_task(self.task)

    @property
    def deployed_pred(self) -> torch.Tensor:
        """The shipped model's predictions: the reference every row is compared with."""
        last = self.logits[:, -1] if self.deployed_logits is None else self.deployed_logits
        return self.task.answers(last)

    @property
    def reference(self) -> torch.Tensor:
        """What "correct" means: gold labels, else the deployed model's predictions."""
        return self.labels if self.labels is not None else self.deployed_pred


def pooled(parts: list[SplitOutputs]) -> SplitOutputs:
    """Several splits' outputs as one, without labels: every row is then scored on agreement with the
    deployed model (what unlabeled rows can tell)."""
    def cat(name):
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else torch.cat(values)

    return SplitOutputs(cat("logits"), cat("lengths"), None, cat("cost"), cat("full"), parts[0].task,
                        cat("features"), cat("deployed_logits"), cat("skipped"))


def data_config_of(config: dict, override: DataConfig | None, flags: dict | None = None) -> DataConfig:
    """``override`` when it names data; else the data the artifact's ``config`` records, with ``flags``
    (data flags given without --data: --max-samples, --split-map, columns) on top."""
    if override is not None and override.spec:
        return override
    saved = config.get("data")
    if not saved:
        raise EebertError("no data given and the artifact records none", "pass --data")
    return replace(DataConfig(**saved), **(flags or {}))


def split_fingerprint(data: TaskData, split: str) -> str:
    """sha256 of a split's texts, pairs and labels, in order."""
    s = data.split(split)
    h = hashlib.sha256()
    for col in (s.text_column, s.pair_column, s.label_column):
        for batch in s.iter_values(col) if col else ():  # a batch of rows at a time: no list of the split
            h.update(json.dumps(batch, ensure_ascii=False, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def cache_key(artifact: art.Artifact, data: TaskData, split: str, runtime: str = "pytorch") -> dict:
    """What a split's outputs depend on; equal keys, equal outputs."""
    gates = artifact.exits.gates
    scored_by = {} if runtime == "pytorch" else {"runtime": runtime, "runtime_version": RUNTIMES.get(runtime).version()}
    return {"format": CACHE_FORMAT, **scored_by, "exits_sha256": art.file_sha256(artifact.path / art.WEIGHTS),
            "backbone_sha256": artifact.deployed.sha256,
            "placement": placement_of(artifact.deployed.model).record(),
            "reference_sha256": artifact.reference.sha256,
            "quantize": getattr(artifact, "quantize", None),
            "gate_threshold": None if gates is None else gates.threshold,
            "max_length": artifact.config["max_length"],
            "split": split, "split_sha256": split_fingerprint(data, split)}


class BackbonePasses:
    """Frozen-backbone passes over a split, kept in RAM and shared by every artifact on that backbone.

    Several artifacts on one deployed model (compare's methods and seeds) differ only in their
    exits, so the states the backbone produces for a split are the same for all of them: one pass
    serves them all. An entry keeps the union of what the artifacts so far read (layers and
    reductions); an artifact that needs more triggers one pass for the widened union. Batches are
    formed by length alone, so a wider pass computes the same states. Paths the exits change
    (gates, a trained or quantized backbone) are never shared.
    """

    def __init__(self):
        self._entries: dict[str, tuple[dict[int, set[str]], object]] = {}

    def get(self, artifact: art.Artifact, outputs_key: dict, enc, needs: dict[int, set[str]],
            batch_size: int, ui: UI = SILENT):
        """``outputs_key``: the split's ``cache_key`` (its backbone, placement, length and split parts)."""
        key = json.dumps({**{k: outputs_key[k] for k in ("backbone_sha256", "placement", "max_length", "split",
                                                         "split_sha256")}, "batch_size": batch_size}, sort_keys=True)
        held = self._entries.get(key)
        if held is not None and all(kinds <= held[0].get(layer, set()) for layer, kinds in needs.items()):
            return held[1]
        union = {layer: set(kinds) for layer, kinds in (held[0] if held else {}).items()}
        for layer, kinds in needs.items():
            union.setdefault(layer, set()).update(kinds)
        self._entries.pop(key, None)  # the narrower pass goes before the wider one is made
        n, split = len(enc), outputs_key["split"]
        with ui.progress(f"backbone pass ({split}, {n} examples, shared by every artifact on this backbone)", n) as advance:
            feats = extract(artifact.deployed.adapter, enc, sorted(union), set(), batch_size, advance, union)
        self._entries[key] = (union, feats)
        return feats


class OutputsCache:
    """Split outputs on disk, one safetensors + one JSON file per key (see the module docstring).

    ``passes``: backbone passes shared with other artifacts' caches (see :class:`BackbonePasses`)."""

    def __init__(self, folder: str | Path, passes: BackbonePasses | None = None):
        self.folder, self.passes = Path(folder), passes

    def _name(self, key: dict) -> str:
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]

    def get(self, key: dict) -> SplitOutputs | None:
        name = self._name(key)
        meta_f, tens_f = self.folder / f"{name}.json", self.folder / f"{name}.safetensors"
        if not (meta_f.is_file() and tens_f.is_file()):
            return None
        meta = json.loads(meta_f.read_text())
        if meta.get("key") != key:  # a hash prefix collision, or a file edited by hand
            return None
        tensors = load_file(tens_f)
        return SplitOutputs(task=meta["task"], **{f.name: tensors.get(f.name) for f in fields(SplitOutputs)
                                                   if f.name != "task"})

    def put(self, key: dict, outputs: SplitOutputs) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = self._name(key)
        tensors = {f.name: getattr(outputs, f.name).contiguous() for f in fields(SplitOutputs)
                   if f.name != "task" and getattr(outputs, f.name) is not None}
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".safetensors")
        os.close(fd)
        try:  # tensors first: the JSON file is what marks an entry complete
            save_file(tensors, tmp, metadata={"format": "pt"})
            os.replace(tmp, self.folder / f"{name}.safetensors")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        art.write_json(self.folder / f"{name}.json", {"key": key, "task": outputs.task.name})


def split_outputs(artifact: art.Artifact, data: TaskData, split: str, batch_size: int = 64,
                  ui: UI = SILENT, deployed_logits: torch.Tensor | None = None,
                  cache: OutputsCache | None = None, runtime: str = "pytorch") -> SplitOutputs:
    """One pass of the artifact over ``split`` (or the cached result of one).

    ``deployed_logits``: the shipped model's logits on this split, if already computed. ``runtime``: whose
    exit logits these are; "pytorch": the batched simulation of the PyTorch loop (the backbone pass below);
    another runtime scores each example itself (``Runtime.exit_logits``, batch size 1).
    """
    key = cache_key(artifact, data, split, runtime) if cache is not None else None
    if cache is not None:
        hit = cache.get(key)
        if hit is not None:
            ui.log(f"cached outputs for {split} ({cache.folder})")
            return hit
    if runtime != "pytorch":
        result = _runtime_outputs(artifact, data, split, batch_size, ui, deployed_logits, runtime)
        if cache is not None:
            cache.put(key, result)
        return result
    dep, exits = artifact.deployed, artifact.exits
    fr = feature_reduction(exits.spec.type)
    needs = exits.needs()
    for layer in exits.layers:  # feature-reading criteria read this pooled reduction at every exit
        needs.setdefault(layer, set()).add(fr)
    s = data.split(split)
    enc = encode(dep.tokenizer, s, artifact.config["max_length"])
    gated = " with skipping gates" if exits.gates is not None else ""
    shared = cache.passes if cache is not None and not artifact.changes_path else None
    if shared is not None:
        want = {layer: set(needs.get(layer, {exits.reduction} if exits.reduction else set()))
                for layer in sorted(set(exits.layers) | set(needs))}
        feats = shared.get(artifact, key, enc, want, batch_size, ui)  # the split fingerprinted once, in key
    else:
        with ui.progress(f"backbone pass{gated} ({split}, {len(s)} examples)", len(s)) as advance:
            feats = extract(dep.adapter, enc, exits.layers, {exits.reduction} if exits.reduction else set(),
                            batch_size, advance, needs, exits.gates)
    if deployed_logits is None and artifact.changes_path:  # the shipped model, for agreement and reference
        with ui.progress(f"deployed model pass ({split})", len(s)) as advance:
            deployed_logits = extract(artifact.reference.adapter, enc, [], set(), batch_size, advance, {}).teacher
    logits = all_exit_logits(exits, feats)
    dims = dep.adapter.dims
    cost = exit_costs(dims, feats.lengths, exits.layers, exits.flops, feats.skipped, exits.gates)
    features = torch.stack([feats.for_layer(fr, layer) for layer in exits.layers], 1)
    result = SplitOutputs(logits, feats.lengths, gold_labels(dep, data, split), cost, full_cost(dims, feats.lengths),
                          task_of(dep.model.config), features, deployed_logits, feats.skipped)
    if cache is not None:
        cache.put(key, result)
    return result


def _runtime_outputs(artifact: art.Artifact, data: TaskData, split: str, batch_size: int, ui: UI,
                     deployed_logits: torch.Tensor | None, runtime: str) -> SplitOutputs:
    """``split``'s outputs as ``runtime`` computes them, one example at a time; FLOPs as the simulation's (they
    depend on lengths and exits only). Exits that read features, gates and bypasses are refused up front
    (``deploy/onnx_scratch.check_exportable``)."""
    dep, exits = artifact.deployed, artifact.exits
    task = task_of(dep.model.config)
    s = data.split(split)
    enc = encode(dep.tokenizer, s, artifact.config["max_length"])
    types = enc.token_type_ids or [None] * len(enc)
    with ui.progress(f"{runtime}: a scratch export, then {split} one example at a time ({len(s)} examples)",
                     len(s)) as advance:
        logits = torch.from_numpy(np.stack(RUNTIMES.get(runtime).exit_logits(artifact, zip(enc.input_ids, types),
                                                                            advance)))
    if deployed_logits is None and artifact.changes_path:  # the shipped model, for agreement and reference
        with ui.progress(f"deployed model pass ({split})", len(s)) as advance:
            deployed_logits = extract(artifact.reference.adapter, enc, [], set(), batch_size, advance, {}).teacher
    dims, lengths = dep.adapter.dims, enc.lengths
    return SplitOutputs(logits, lengths, gold_labels(dep, data, split),
                        exit_costs(dims, lengths, exits.layers, exits.flops, None, None), full_cost(dims, lengths),
                        task, None, deployed_logits, None)


def problem_for(outputs: SplitOutputs, criterion, exits=None):
    """The calibration :class:`~eebert_cli.scoring.threshold_search.Problem` of these outputs under ``criterion``: the
    task's per-example figure at every exit (``Problem.scale`` undoes its scaling). With the artifact's
    ``exits`` (an ExitSet) its outcomes charge FLOPs as the runtime spends them: an exit the runtime skips
    ("never" under a stateless criterion) costs nothing."""
    from .threshold_search import Problem

    scores = criterion.scores(outputs.logits, outputs.features if criterion.needs_features else None)[:, :-1]
    correct, scale = outputs.task.correctness(outputs.logits, outputs.reference)
    charges = None if exits is None else exit_charges(exits.flops, len(exits.layers), outputs.lengths)
    return Problem(scores, correct, outputs.cost, outputs.full, charges, scale=scale, stateless=criterion.stateless)
