"""Early-exit inference: run the backbone layer by layer and stop where the criterion says.

Batch size 1 runs unpadded and unmasked with one host sync per exit (the exit
decision). Batches use per-sample exits: rows that exit leave the batch, with
their attention-mask rows, and the rest run on; results come back in input order.
A batch also syncs once per evaluated exit: the count of leaving rows and the
width of the rest travel to the host together; the row indices stay on the device.
Skipping gates (SmartBERT), when the artifact has them, are asked before each
gated layer: a row whose gate fires does not run that layer at all.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .artifact import Artifact, load_artifact
from .calibration import thresholds_from_json
from .calibration import INF, skipped_exits
from ..criteria import Criterion, build_criterion, feature_reduction
from .device import Placement, module_device, place_artifact, resolve
from .device_config import DeviceConfig
from ..core.errors import EebertError
from ..exits import reduce
from ..gates import gated_layer
from ..tasks import Prediction, get as get_task, prediction_row  # noqa: F401 (re-exported: what predict returns)


#: how batches exit: each row on its own, or the whole batch at once (the baseline)
BATCH_MODES = ("per-sample", "whole-batch")


def pad_batch(ids: list[list[int]], types: list[list[int]] | None, pad_id: int):
    """Right-pad token lists -> (input_ids, attention_mask, token_type_ids or None) tensors."""
    width = max(map(len, ids))
    t_ids = torch.tensor([x + [pad_id] * (width - len(x)) for x in ids])
    t_mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    t_types = torch.tensor([x + [0] * (width - len(x)) for x in types]) if types else None
    return t_ids, t_mask, t_types


#: what ``EarlyExitModel.from_artifact`` keeps of the PyTorch weights (see there)
KEEP = ("all", "backbone", "none")


class EarlyExitModel:
    def __init__(self, artifact: Artifact, criterion: Criterion, thresholds: list[float]):
        self.artifact = artifact
        self.adapter = artifact.deployed.adapter
        self.exits = artifact.exits
        self.layers = artifact.exits.layers
        self.reduction = artifact.exits.reduction
        self.taps = artifact.exits.taps()  # states kept for bypasses: layer -> reductions
        gates = artifact.exits.gates  # skipping gates; at threshold 1.0 none can fire, so none is asked
        self.gates = gates if gates is not None and gates.active else None
        self.feature_reduction = feature_reduction(artifact.exits.spec.type)  # what feature-reading criteria read
        self.criterion = criterion
        self.thresholds = [float(t) for t in thresholds]
        self.num_layers = self.adapter.dims.num_layers
        self.task = get_task(artifact.config.get("task"))  # how logits become answers
        if len(self.thresholds) != len(self.layers):
            raise EebertError("calibration does not match the artifact's exits", "re-run `eebert calibrate`")
        self._plan_key: tuple | None = None
        self._plan_cache: list = []
        self.device = module_device(artifact.exits) if list(artifact.exits.parameters()) else torch.device("cpu")

    @classmethod
    def from_artifact(cls, path: str | Path, backbone: str | Path | None = None,
                      device: DeviceConfig | None = None, keep: str = "all") -> "EarlyExitModel":
        """``keep``: which PyTorch weights the caller needs. "all": the backbone and the shipped model beside a
        quantized one (what benchmarks compare with); "backbone": what the early exit runs (a server);
        "none": nothing, another runtime's graphs answer (a server on ONNX Runtime: the backbone is loaded to
        hash-check the checkpoint, then freed, see ``Artifact.release``)."""
        if keep not in KEEP:
            raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
        where = resolve(device)  # a bad device fails before anything loads
        art = load_artifact(path, backbone)
        if get_task(art.config.get("task")).level == "token":  # taggers run in model/tagger_runtime.py
            raise EebertError(f"{path} is a tagger's artifact: compare and the Ray executor run "
                              "sentence classifiers so far", f"tag texts with `eebert predict {path} TEXT ...`")
        cal = art.calibration
        if cal is None:
            raise EebertError(f"{path} is not calibrated yet", f"run `eebert calibrate {path} --target-speedup 2.0`")
        from .quantize import as_calibrated

        if keep != "none":  # thresholds calibrated on a quantized backbone: run the same
            as_calibrated(art, reference=keep == "all")
        model = cls(art, build_criterion(cal.criterion, cal.criterion_params, art), thresholds_from_json(cal.thresholds))
        if keep != "all":  # a trained backbone's shipped original, and with "none" the backbone itself
            art.release(keep_backbone=keep == "backbone")
        if keep != "none":
            model.place(where)
        return model

    def place(self, where: Placement) -> None:
        """Backbone, exits and any learned criterion part onto ``where.device`` (see device.py)."""
        place_artifact(self.artifact, where)
        for part in vars(self.criterion).values():
            if isinstance(part, torch.nn.Module):
                part.to(where.device)
        self.device = where.device

    @property
    def exit_layers(self) -> list[int]:
        """1-based layer of each exit, the deployed head last."""
        return self.layers + [self.num_layers]

    def _plan(self) -> list[tuple[int, int, float]]:
        """(exit index, layer, threshold) of the exits worth evaluating, cached per thresholds.

        With a stateless criterion (``init_state`` keeps nothing between exits) an
        exit whose threshold is "never" cannot fire and feeds nothing later, so it
        is not evaluated at all; a stateful one (patience) sees every exit.
        """
        key = tuple(self.thresholds)
        if self._plan_key != key:
            skip = skipped_exits(self.thresholds, self.criterion.stateless)
            self._plan_cache = [(k, layer, t) for k, (layer, t) in enumerate(zip(self.layers, self.thresholds))
                                if k not in skip]
            self._plan_key = key
        return self._plan_cache

    @torch.inference_mode()
    def forward_one(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        """One unpadded example [1, T] -> (logits [1, C], exit index).

        The hot loop at batch size 1: no mask (nothing is padded), the layer state
        built once, one host sync per evaluated exit (the decision itself), and
        nothing allocated per layer beyond what the layers themselves allocate.
        """
        ad = self.adapter
        layer_fn, observe, wants = ad.layer, self.criterion.observe, self.criterion.needs_features
        if self.gates is not None:
            layer_fn = self._gated_one
        hidden = ad.embed(input_ids, None, token_type_ids)
        state = ad.prepare(hidden, None)
        cstate = self.criterion.init_state(1, hidden.device)
        done = 0
        taps = self.taps  # layer -> reductions bypasses read; empty without bypasses
        kept = self._tap(0, hidden, None, {}) if taps else {}
        for k, layer, threshold in self._plan():
            while done < layer:
                hidden = layer_fn(done, hidden, state)
                done += 1
                if taps:
                    kept = self._tap(done, hidden, None, kept)
            get = self._getter(layer, hidden, None, kept)
            logits = self.exits.logits(k, get)
            if threshold == INF:  # "always": leave without scoring
                return logits, k
            score, cstate = observe(logits, cstate, get(self.feature_reduction, layer) if wants else None)
            if score.item() <= threshold:
                return logits, k
        while done < self.num_layers:
            hidden = layer_fn(done, hidden, state)
            done += 1
        return ad.head(hidden, None), len(self.layers)

    @torch.inference_mode()
    def forward_batch(self, input_ids, attention_mask, token_type_ids=None, trim: bool = True,
                      mode: str = "per-sample"):
        """A right-padded batch -> (logits [B, C], exit index [B]), input order.

        ``mode="per-sample"``: rows that may exit leave the batch with their
        attention-mask rows, the rest run on (optionally trimmed to the longest
        remaining row); each row gets exactly its batch-size-1 answer.
        ``mode="whole-batch"``: the baseline most early-exit code implements: the
        batch leaves together at the first exit where *every* row may leave, and
        all rows answer from that exit (no row leaves earlier than the slowest).
        """
        if mode not in BATCH_MODES:
            raise EebertError(f"unknown batch mode {mode!r}", f"choose one of {', '.join(BATCH_MODES)}")
        ad = self.adapter
        step = self._gated_batch if self.gates is not None else (lambda i, h, st, m: ad.layer(i, h, st))
        n, dev = input_ids.shape[0], input_ids.device
        out = torch.empty(n, ad.dims.num_labels, device=dev)
        where = torch.full((n,), len(self.layers), dtype=torch.long, device=dev)
        rows = torch.arange(n, device=dev)
        mask = attention_mask
        hidden = ad.embed(input_ids, mask, token_type_ids)
        state = ad.prepare(hidden, mask)
        cstate = self.criterion.init_state(n, dev)
        done = 0
        taps = self.taps
        kept = self._tap(0, hidden, mask, {}) if taps else {}
        wants = self.criterion.needs_features
        for k, layer, threshold in self._plan():
            while done < layer:
                hidden = step(done, hidden, state, mask)
                done += 1
                if taps:
                    kept = self._tap(done, hidden, mask, kept)
            get = self._getter(layer, hidden, mask, kept)
            logits = self.exits.logits(k, get)
            score, cstate = self.criterion.observe(logits, cstate, get(self.feature_reduction, layer) if wants else None)
            leave = score <= threshold
            if mode == "whole-batch":
                if bool(leave.all()):
                    out[rows] = logits.float()
                    where[rows] = k
                    return out, where
                continue
            # the exit's one host sync: how many rows leave and how wide the stayers are, read together
            lengths = mask.sum(1)
            gone, width = torch.stack([leave.sum(), lengths.masked_fill(leave, 0).max()]).tolist()
            if gone == 0:
                continue
            # stayers first, each group in input order (a stable sort): index lists without another sync
            order = torch.argsort(leave.to(torch.uint8), stable=True)
            keep, go = order[:len(order) - gone], order[len(order) - gone:]
            out[rows[go]] = logits[go].float()
            where[rows[go]] = k
            if keep.numel() == 0:
                return out, where
            rows, hidden, mask = rows[keep], hidden[keep], mask[keep]
            kept = {key: v[keep] for key, v in kept.items()}
            cstate = self.criterion.select(cstate, keep)
            if trim and width < mask.shape[1]:  # right padding: drop columns no row uses
                hidden, mask = hidden[:, :width], mask[:, :width]
                state = ad.prepare(hidden, mask)
            else:
                state = ad.select(state, keep)
        while done < self.num_layers:
            hidden = step(done, hidden, state, mask)
            done += 1
        out[rows] = ad.head(hidden, mask).float()
        return out, where

    def _gated_one(self, index: int, hidden, state):
        """Layer ``index`` (0-based) for one example, unless its gate says skip (one host sync)."""
        if index + 1 in self.gates and bool(self.gates.skip(index + 1, hidden, None)):
            return hidden
        return self.adapter.layer(index, hidden, state)

    def _gated_batch(self, index: int, hidden, state, mask):
        """Layer ``index`` for the rows whose gate does not fire; the others keep their states."""
        if index + 1 not in self.gates:
            return self.adapter.layer(index, hidden, state)
        return gated_layer(self.adapter, self.gates, index, hidden, state, mask)[0]

    def _tap(self, layer: int, hidden, mask, kept: dict) -> dict:
        """Keep the reductions bypasses read from this layer (only when the artifact has bypasses)."""
        for r in self.taps.get(layer, ()):
            kept[(r, layer)] = reduce(r, hidden, mask)
        return kept

    @staticmethod
    def _getter(layer: int, hidden, mask, kept: dict):
        def get(reduction: str, at: int):
            return reduce(reduction, hidden, mask) if at == layer else kept[(reduction, at)]

        return get

    def predict(self, texts: list[str], pairs: list[str] | None = None, batch_size: int = 1,
                mode: str = "per-sample") -> list[Prediction]:
        tok = self.artifact.deployed.tokenizer
        enc = tok(texts, pairs, truncation=True, max_length=self.artifact.config["max_length"])
        id2label = self.artifact.deployed.id2label
        results: list[Prediction] = []
        for b in range(0, len(texts), batch_size):
            ids = enc["input_ids"][b:b + batch_size]
            types = enc.get("token_type_ids")
            types = types[b:b + batch_size] if types else None
            dev = self.device
            if batch_size == 1:
                logits, k = self.forward_one(torch.tensor(ids, device=dev),
                                             torch.tensor(types, device=dev) if types else None)
                where = [k]
            else:
                t_ids, t_mask, t_types = (None if t is None else t.to(dev)
                                          for t in pad_batch(ids, types, tok.pad_token_id or 0))
                logits, where_t = self.forward_batch(t_ids, t_mask, t_types, mode=mode)
                where = where_t.tolist()
            logits = logits.float().cpu()  # one copy back per batch
            results += self.task.predictions(logits, [self.exit_layers[k] for k in where], id2label)
        return results

