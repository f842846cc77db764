"""What the server runs: a batch of (text, pair) rows -> one Prediction per row.

The early-exit engines call the runtime's own batched path (``forward_batch``,
per-sample exits: rows leave at their own exit, the rest run on), and batch
size 1 its ``forward_one``, so every row gets the answer `eebert predict`
gives it alone. ``--deployed`` runs the model as shipped (backbone and head)
on the same batches, for a like-for-like comparison under load.

A tagger's artifact gets a ``TaggerEngine``: the runtime's tagger (``Runtime.tagger``: the
PyTorch one or the ONNX segment graphs) answers each batch with the rows ``eebert predict``
gives (entity spans with character offsets, per-word tags, the exit layer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ...model.artifact import CALIBRATION, CONFIG, WEIGHTS, load_artifact
from ...model.device import place_artifact
from ...model.device_config import DeviceConfig
from ...model.runtime import EarlyExitModel, pad_batch
from ...model.tagger_runtime import tagger_task
from ...tasks import Prediction, Task, get as get_task
from ..runtimes import RUNTIMES, runtime_for
from .config import ServeConfig

Row = tuple[str, "str | None"]
#: (input_ids, attention_mask or None when unpadded, token_type_ids or None) -> (logits [B, C], exit index per row)
Forward = Callable[[torch.Tensor, "torch.Tensor | None", torch.Tensor], tuple]


def files_id(folder: Path, names: tuple[str, ...]) -> str:
    """A short content id over the named files of an artifact (missing files count as empty)."""
    digest = hashlib.sha256()
    for name in names:
        f = folder / name
        digest.update(name.encode() + b"\0" + (f.read_bytes() if f.is_file() else b""))
    return digest.hexdigest()[:12]


@dataclass
class Engine:
    kind: str                       #: "early-exit" or "deployed"
    runtime: str                    #: the runtime's registered name (runtimes.py)
    tokenizer: object
    max_length: int
    exit_layers: list[int]          #: 1-based layer of each exit index, the deployed head last
    id2label: dict[int, str]
    forward: Forward
    info: dict = field(default_factory=dict)  #: ids and hashes shown by /readyz and the status page
    task: Task = field(default_factory=lambda: get_task(None))  #: the checkpoint's task: how logits become answers
    device: torch.device = torch.device("cpu")  #: where the model's inputs go

    @property
    def model_id(self) -> str:
        return self.info["model_id"]

    @property
    def calibration_id(self) -> str | None:
        return self.info.get("calibration_id")

    def tokenize(self, rows: list[Row]) -> tuple[list[list[int]], list[list[int]] | None]:
        """Token ids (and token types, if the tokenizer makes them) per row, truncated as `eebert predict` does.

        One tokenizer call for the batch when every row is single or every row is a pair, else one per row.
        """
        tok, n = self.tokenizer, self.max_length
        texts, pairs = [r[0] for r in rows], [r[1] for r in rows]
        if all(p is None for p in pairs) or all(p is not None for p in pairs):
            enc = tok(texts, None if pairs[0] is None else pairs, truncation=True, max_length=n)
            ids, types = enc["input_ids"], enc.get("token_type_ids")
        else:
            encs = [tok(t, p, truncation=True, max_length=n) for t, p in rows]
            ids, types = [e["input_ids"] for e in encs], [e.get("token_type_ids") for e in encs]
            types = None if types[0] is None else types
        return ids, types

    def run(self, rows: list[Row]) -> list[Prediction]:
        """Tokenise each row as `eebert predict` does, pad, run one batch, answer in input order."""
        ids, types = self.tokenize(rows)
        dev = self.device
        if len(rows) == 1:  # unpadded, no mask: exactly the batch-1 path
            logits, where = self.forward(torch.tensor(ids, device=dev), None,
                                         torch.tensor(types, device=dev) if types else None)
        else:
            logits, where = self.forward(*(None if t is None else t.to(dev)
                                           for t in pad_batch(ids, types, self.tokenizer.pad_token_id or 0)))
        # one copy back per batch (logits and exits), not one per row
        logits = torch.as_tensor(logits).float().cpu()
        where = where.tolist() if isinstance(where, torch.Tensor) else where
        return self.task.predictions(logits, [self.exit_layers[int(k)] for k in where], self.id2label)

    #: whether a row may carry a second text (sentence-pair classifiers)
    pairs = True

    @staticmethod
    def exit_layer(p) -> int:
        return p.exit_layer

    @staticmethod
    def answer(p) -> dict:
        """One prediction as the response writes it."""
        return {"label": p.label, "label_id": p.label_id, "probs": p.probs, "exit_layer": p.exit_layer}


@dataclass
class TaggerEngine(Engine):
    """A tagger's rows per text; ``exit_at``: every sentence out at that exit (--deployed: the last)."""

    tagger: object = None
    exit_at: int | None = None
    pairs = False

    def run(self, rows: list[Row]) -> list[dict]:
        return self.tagger.predict([t for t, _ in rows], batch_size=len(rows), exit_at=self.exit_at)

    @staticmethod
    def exit_layer(p) -> int:
        return p["exit_layer"]

    @staticmethod
    def answer(p) -> dict:
        return {k: v for k, v in p.items() if k != "text"}  # the request holds the text


def load_tagger_engine(cfg: ServeConfig, where) -> TaggerEngine:
    """The engine for a tagger's artifact: its runtime's tagger, on ``where`` (PyTorch) or the CPU (ONNX)."""
    path = Path(cfg.artifact)
    art = load_artifact(path, cfg.backbone or None)
    runtime = RUNTIMES.get(cfg.runtime)
    tagger = runtime.tagger(art, cfg.onnx_dir, cfg.torch_threads())
    if runtime.runs_backbone:
        place_artifact(art, where)
    art.release(keep_backbone=runtime.runs_backbone)  # tags come from the tagger, never the shipped copy
    layers = art.calibration.exit_layers
    if cfg.deployed:
        exit_layers, exit_at = [layers[-1]], len(layers) - 1
        info = {"model_id": "deployed-" + art.deployed.sha256[:12], "calibration_id": None}
    else:
        exit_layers, exit_at = layers, None
        info = {"model_id": files_id(path, (CONFIG, WEIGHTS)), "calibration_id": files_id(path, (CALIBRATION,)),
                "thresholds": [round(t, 6) if abs(t) != float("inf") else str(t) for t in tagger.thresholds]}
    info.update(artifact=str(path.resolve()), backbone=str(art.deployed.path),
                backbone_sha256=art.config["backbone"]["sha256"], hash_checked=True, exit_layers=exit_layers,
                threads=cfg.torch_threads(), **where.record())
    return TaggerEngine("deployed" if cfg.deployed else "early-exit", cfg.runtime, art.deployed.tokenizer,
                        art.config["max_length"], exit_layers, art.deployed.id2label, None, info,
                        get_task(art.config.get("task")), where.device, tagger=tagger, exit_at=exit_at)


def load_engine(cfg: ServeConfig) -> Engine:
    """Load and hash-check the artifact (and its ONNX export) and build the engine the config asks for."""
    where = cfg.placement()
    torch.set_num_threads(cfg.torch_threads())
    if cfg.ort_pool == "shared":  # this worker's ONNX Runtime sessions, deployed or early exit, on one pool
        from ..onnx_runtime import use_shared_pool

        use_shared_pool(cfg.torch_threads())
    backbone = cfg.backbone or None
    path = Path(cfg.artifact)
    if tagger_task(path) is not None:
        return load_tagger_engine(cfg, where)
    runs_backbone = RUNTIMES.get(cfg.runtime).runs_backbone
    if cfg.deployed:
        art = load_artifact(path, backbone)
        if runs_backbone:
            place_artifact(art, where)  # the deployed model on the same device and dtype as the early-exit one
        model = None
        layers = art.config["backbone"]["num_layers"]
        exit_layers, dep = [layers], art.reference
        info = {"model_id": "deployed-" + dep.sha256[:12], "calibration_id": None}
    else:
        model = EarlyExitModel.from_artifact(path, backbone, DeviceConfig(str(where.device), where.dtype_name),
                                             keep="backbone" if runs_backbone else "none")
        art, exit_layers, dep = model.artifact, model.exit_layers, model.artifact.deployed
        info = {"model_id": files_id(path, (CONFIG, WEIGHTS)), "calibration_id": files_id(path, (CALIBRATION,))}
    info.update(artifact=str(path.resolve()), backbone=str(dep.path), backbone_sha256=art.config["backbone"]["sha256"],
                hash_checked=True, exit_layers=exit_layers, threads=cfg.torch_threads(),
                **where.record())
    if model is not None:
        info["thresholds"] = [round(t, 6) if abs(t) != float("inf") else str(t) for t in model.thresholds]
    rt = runtime_for(cfg.runtime, art, model, cfg.onnx_dir, cfg.torch_threads(), deployed=cfg.deployed)
    if model is not None and rt.differs:  # said at start and on the status page
        info["warning"] = rt.differs
    if model is None and not runs_backbone:  # the deployed graph answers: the PyTorch weights only hash-checked
        art.release(keep_backbone=False)
    if model is None:  # the deployed model as shipped: one exit, its own head
        def fwd(ids, mask, types):
            with torch.inference_mode():
                return rt.deployed(ids, mask, types), [0] * len(ids)
    else:
        fwd = rt.early_exit
    return Engine("deployed" if cfg.deployed else "early-exit", cfg.runtime, art.deployed.tokenizer,
                  art.config["max_length"], exit_layers, art.deployed.id2label, fwd, info,
                  get_task(art.config.get("task")), where.device)
