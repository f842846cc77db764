"""The eebert artifact: exit weights only, the backbone referenced and hash-checked.

    ARTIFACT/
      eebert_config.json   format version, backbone path + fingerprint, exits spec, labels,
                           sha256 of every weights file it lists (written last: the commit)
      exits.safetensors    exit weights (and gates; never the backbone's)
      backbone.safetensors only when the backbone was trained too (SmartBERT gates with
                           train_backbone): the whole changed model, its own sha256 in the config
      calibration.json     criterion, thresholds, validation estimate; records the exits' sha256
      report.json, report.md, ...  record the calibration's sha256
      .eebert.lock         held by the command writing the artifact

The artifact is a unit: every file derived from another records the hash of what it
was made from, and loading refuses a stale one (see docs/reliability.md). Every file
is written atomically (temp file in the same folder + rename), the config last, and
writers hold a lock, so an interrupted or concurrent command never mixes old and new.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from .checkpoint import Deployed, file_sha256, fingerprint_files, load_deployed, stat_key  # noqa: F401 (file_sha256 re-exported)
from ..core.atomic import TMP_TAG, _atomic, _stage, file_mode, read_json, restore_aside, write_json, write_text  # noqa: F401 (re-exported)
from .calibration import Calibration
from ..core.errors import EebertError
from ..exits import ExitSet, ExitSpec

FORMAT_VERSION = 1
CONFIG, WEIGHTS, CALIBRATION = "eebert_config.json", "exits.safetensors", "calibration.json"
BACKBONE_WEIGHTS = "backbone.safetensors"
LOCK = ".eebert.lock"
#: names eebert writes into an artifact folder (derived ONNX folders are recognised by their manifest)
OWN_FILES = frozenset({CONFIG, WEIGHTS, CALIBRATION, BACKBONE_WEIGHTS, LOCK, "learned_exit.safetensors",
                       "report.json", "report.md", "curves.svg"})
LOCK_WAIT_S = 3.0  #: how long a second writer waits for the lock (EEBERT_LOCK_WAIT overrides)


# --- what an --out may be -------------------------------------------------------------------------

#: names eebert writes only into a finished artifact (after its config): in a folder without one, they are not eebert's
AFTER_CONFIG = frozenset({CALIBRATION, "report.json", "report.md", "curves.svg"})


def is_export(folder: Path) -> bool:
    """An eebert ONNX export: its manifest.json is a JSON object with the keys eebert writes (a user's is not)."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"format_version", "segments", "calibration_sha256"} <= manifest.keys()


def is_own(entry: Path) -> bool:
    """Whether eebert wrote this artifact entry: a known name, a temporary, or an ONNX export."""
    return entry.name in OWN_FILES or TMP_TAG in entry.name or (entry.is_dir() and is_export(entry))


def check_out(out: str | Path, checkpoint: str | Path | None = None, overwrite: bool = False,
              flag: str = "--out", foreign_hint: str | None = None) -> Path:
    """Refuse an ``--out`` whose writing would lose data; call before any long work.

    Never the checkpoint or a folder inside it, never an existing file. An existing folder
    must be an artifact (or hold only what eebert writes) unless ``overwrite``; even then
    only the artifact's own files are replaced, nothing else in the folder is touched.
    """
    p = Path(out).expanduser()
    if checkpoint is not None:
        o, c = p.resolve(), Path(checkpoint).expanduser().resolve()
        if o == c or c in o.parents:
            where = "is the checkpoint" if o == c else f"is inside the checkpoint {checkpoint}"
            raise EebertError(f"{flag} {out} {where}; the deployed model's files must stay as they are",
                              f"write the artifact elsewhere, e.g. {flag} {c.name}-eebert")
    if p.is_symlink() and not p.exists():
        raise EebertError(f"{flag} {out} is a broken symbolic link", "choose a new directory for the artifact")
    if p.exists() and not p.is_dir():
        raise EebertError(f"{flag} {out} is an existing file, not an artifact directory",
                          "choose a new directory; eebert never replaces a file with a directory")
    later = sorted(e.name for e in p.iterdir() if e.name in AFTER_CONFIG) if p.is_dir() and not (p / CONFIG).is_file() else []
    if later:  # eebert would replace them later (calibrate, benchmark), --overwrite or not
        raise EebertError(f"{flag} {out} is not an eebert artifact and holds {later[0]}, a file eebert writes into "
                          "an artifact: it would be replaced", f"move {later[0]} elsewhere, or choose a new directory")
    if p.is_dir() and not (p / CONFIG).is_file() and not overwrite:
        foreign = sorted(e.name for e in p.iterdir() if not is_own(e))
        if foreign:
            raise EebertError(f"{flag} {out} is a directory that is not an eebert artifact "
                              f"({len(foreign)} other entries, e.g. {foreign[0]})",
                              foreign_hint or "choose a new directory, or pass --overwrite to add the "
                              "artifact's files to it (the other files are kept)")
    return p


# --- one writer at a time ---------------------------------------------------------------------------

_held: dict[str, int] = {}  # artifacts this process holds the lock on (the lock is re-entrant here)


@contextmanager
def artifact_lock(path: str | Path, command: str, wait: float | None = None) -> Iterator[Path]:
    """Hold the artifact's lock for a whole writing command (attach, calibrate, benchmark, export).

    A second writer waits up to ``wait`` seconds, then fails with one line naming the
    holder. ``attach`` creates the folder if needed (and removes it again, empty, if it fails
    before writing anything); the others lock existing artifacts only, so no lock file is
    ever left in a folder that is not one. Temporaries left by an interrupted writer are removed.
    """
    p = Path(path).expanduser()
    if command != "attach":
        require_artifact(p, path)
    key = str(p.resolve())
    if key in _held:
        _held[key] += 1
        try:
            yield p
        finally:
            _held[key] -= 1
        return
    created = not p.exists()
    p.mkdir(parents=True, exist_ok=True)
    fd = os.open(p / LOCK, os.O_RDWR | os.O_CREAT, file_mode())
    wait = float(os.environ.get("EEBERT_LOCK_WAIT", LOCK_WAIT_S)) if wait is None else wait
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise EebertError(f"{path} is being written by another eebert command ({holder})",
                                  "wait for it to finish, then run this again (two writers would mix exits "
                                  "and thresholds)") from None
            time.sleep(0.05)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: eebert {command}".encode(), 0)
    for e in list(p.iterdir()):  # we hold the lock: any temporary here is a dead writer's
        if restore_aside(e):  # a folder a crashed swap moved aside, with nothing in its place: back it goes
            continue
        if TMP_TAG in e.name:
            shutil.rmtree(e, ignore_errors=True) if e.is_dir() else e.unlink(missing_ok=True)
    _held[key] = 1
    try:
        yield p
    finally:
        del _held[key]
        if created and [e.name for e in p.iterdir()] == [LOCK]:  # failed before writing: leave no trace
            (p / LOCK).unlink(missing_ok=True)
            p.rmdir()
        os.close(fd)


# --- derivation hashes --------------------------------------------------------------------------------

def derivation(folder: Path, *names: str, known: dict[str, str] | None = None) -> dict:
    """``{"derived_from": {name: sha256}}`` for a derived file's record; ``known`` hashes win
    (the hash of what was loaded, not of what may be on disk by now)."""
    return {"derived_from": {n: (known or {}).get(n) or file_sha256(folder / n) for n in names}}


def check_derivation(record: dict, current: dict[str, str], what: str, command: str) -> None:
    """Refuse a derived file made from other sources than ``current`` (name -> sha256)."""
    for name, sha in (record.get("derived_from") or {}).items():  # none recorded: an older eebert made it
        if name in current and current[name] != sha:
            raise EebertError(f"{what} is stale: it was made from another {name} than the artifact's current one",
                              f"re-run `{command}`")


# --- weights ----------------------------------------------------------------------------------------------

def check_finite(tensors: dict[str, torch.Tensor], where: str, hint: str) -> None:
    for k, v in tensors.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise EebertError(f"{where}: {k} holds NaN or infinite values", hint)


#: stat keys (checkpoint.stat_key) of weight files already checked finite in this process
_FINITE: set[tuple] = set()


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, with a damaged or non-finite one refused in one line."""
    if not path.is_file():
        raise EebertError(f"missing {path.name} in {path.parent}", "re-create the artifact with `eebert attach`")
    key = stat_key([path])  # before reading: a change after it makes another key
    try:
        tensors = load_file(path)
    except Exception as e:  # safetensors raises its own error type for truncated/garbled files
        raise EebertError(f"{path} cannot be read ({str(e).splitlines()[0] if str(e) else type(e).__name__})",
                          "the file is truncated or damaged; re-create the artifact with `eebert attach`") from None
    if key is None or key not in _FINITE:  # checked once per file version in a process (compare reloads often)
        check_finite(tensors, str(path), "the weights are unusable; re-create the artifact with `eebert attach`")
        if key is not None:
            _FINITE.add(key)
    return tensors


def save_artifact(out: Path, config: dict, exits: ExitSet, extra: dict[str, dict] | None = None) -> None:
    """Write the artifact's weights and config; ``extra`` maps further safetensors file names to tensors.

    Every weights file is staged next to its final name first, then all are renamed in
    and the config, which lists their hashes, goes last. Other files in ``out`` (a
    calibration, reports, anything of the user's) are left alone; a calibration of other
    exits becomes stale and is refused at load.
    """
    out = Path(out)
    meta = {"format": "pt", "eebert_format_version": str(FORMAT_VERSION)}
    files = {WEIGHTS: {k: v.contiguous() for k, v in exits.state_dict().items()}}
    # clone: a model's state dict may hold tensors sharing storage, which safetensors refuses
    files.update({n: {k: v.detach().clone().contiguous() for k, v in t.items()} for n, t in (extra or {}).items()})
    for name, tensors in files.items():  # before anything is written
        check_finite(tensors, f"training produced unusable weights for {name}; nothing was written",
                     "lower --lr or --epochs, and check the data for extreme or missing values")
    with artifact_lock(out, "attach"):
        staged: dict[str, Path] = {}
        try:
            for name, tensors in files.items():
                staged[name] = _stage(out / name, lambda p, t=tensors: save_file(t, p, metadata=meta))
            hashes = {name: file_sha256(tmp) for name, tmp in staged.items()}
            config = {**config, "files": {n: h for n, h in hashes.items() if n != BACKBONE_WEIGHTS}}
            if BACKBONE_WEIGHTS in hashes:  # the hash refers to the new weights, as written
                config["backbone"] = {**config["backbone"], "trained": {
                    "file": BACKBONE_WEIGHTS, "sha256": hashes[BACKBONE_WEIGHTS]}}
            cfg_tmp = _stage(out / CONFIG, lambda p: p.write_text(
                json.dumps(config, indent=2, allow_nan=False) + "\n", encoding="utf-8"))
            staged[CONFIG] = cfg_tmp
            for name, tmp in staged.items():  # dict order: the config last
                os.replace(tmp, out / name)
        except BaseException:
            for tmp in staged.values():
                tmp.unlink(missing_ok=True)
            raise


def make_config(deployed: Deployed, spec: ExitSpec, max_length: int, extra: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "eebert_version": __version__,
        "backbone": {"path": str(deployed.path.resolve()), "sha256": deployed.sha256,
                     "files": fingerprint_files(deployed.path),
                     "model_type": deployed.model.config.model_type,
                     "num_layers": deployed.adapter.dims.num_layers,
                     **({"hub": deployed.hub.to_dict()} if deployed.hub else {})},
        "labels": [deployed.id2label[i] for i in range(len(deployed.id2label))],
        "exits": spec.to_dict(),
        "max_length": max_length,
        **extra,
    }


@dataclass
class Artifact:
    path: Path
    config: dict
    deployed: Deployed   #: the backbone the exits run on (the trained one if the artifact carries one)
    exits: ExitSet
    original: Deployed | None = None  #: the deployed model as shipped, when ``deployed`` differs from it
    quantize: str | None = None  #: scheme ``deployed`` was quantized with (``original`` then keeps fp32)
    _calibration: Any = field(default=None, repr=False, compare=False)  #: read once (see ``calibration``)
    _calibration_read: bool = field(default=False, repr=False, compare=False)

    @property
    def reference(self) -> Deployed:
        """The deployed model as shipped: what benchmarks compare against."""
        return self.original or self.deployed

    def release(self, keep_backbone: bool = True) -> None:
        """Free PyTorch weights a server of the early exit never runs (moved to the meta device, so a use
        fails loudly instead of computing): the shipped model kept beside a quantized or trained backbone
        (``original``, what benchmarks compare with), and with ``keep_backbone`` off the backbone too,
        where another runtime's graphs answer (the tokenizer, config and hashes stay)."""
        for d in (self.original, None if keep_backbone else self.deployed):
            if d is not None:
                d.model.to("meta")

    @property
    def changes_path(self) -> bool:
        """Whether the early-exit model's last exit differs from the deployed model (gates, trained or quantized backbone)."""
        return self.original is not None or self.exits.gates is not None

    @property
    def exits_sha256(self) -> str:
        """sha256 of the exit weights as loaded (older artifacts: as on disk)."""
        return (self.config.get("files") or {}).get(WEIGHTS) or file_sha256(self.path / WEIGHTS)

    @property
    def calibration(self) -> Calibration | None:
        """calibration.json as its typed record, read once per load; refused when it was made for
        other exits (the artifact was re-attached since)."""
        if not self._calibration_read:
            cal = Calibration.load(self.path)
            if cal is not None:
                check_derivation({"derived_from": cal.derived_from}, {WEIGHTS: self.exits_sha256},
                                 f"{self.path / CALIBRATION} (thresholds for other exits)",
                                 f"eebert calibrate {self.path} --target-speedup X")
            self._calibration, self._calibration_read = cal, True
        return self._calibration

    @calibration.setter
    def calibration(self, cal: Calibration | None) -> None:
        """The record just written by the calibrate step (so this loaded artifact does not re-read it)."""
        self._calibration, self._calibration_read = cal, True


def check_backbone(config: dict, deployed: Deployed) -> None:
    """The checkpoint must be the one the exits were trained on: weights, config and tokenizer files."""
    recorded = config["backbone"]
    if deployed.sha256 != recorded["sha256"]:
        raise EebertError(f"backbone weights at {deployed.path} do not match the artifact "
                          f"(sha256 {deployed.sha256[:12]}… != {recorded['sha256'][:12]}…)",
                          "point --backbone at the checkpoint the exits were trained on, or re-run `eebert attach`")
    files = recorded.get("files")
    if files is None:  # attached by an older eebert: the weights are all it recorded
        return
    now = fingerprint_files(deployed.path)
    changed = sorted(n for n in set(files) | set(now) if files.get(n) != now.get(n))
    if changed:
        raise EebertError(f"backbone at {deployed.path} changed since attach: {', '.join(changed)} "
                          f"{'differs' if len(changed) == 1 else 'differ'} from what the exits were trained with",
                          "restore the checkpoint's files, point --backbone at the original, or re-run `eebert attach`")


def require_artifact(p: Path, path: str | Path) -> None:
    if not (p / CONFIG).is_file():
        raise EebertError(f"not an eebert artifact: {path} (no {CONFIG})", "create one with `eebert attach`")


def read_config(path: str | Path) -> dict:
    """An artifact's checked eebert_config.json alone: what a step reads before the weights load."""
    p = Path(path).expanduser()
    require_artifact(p, path)
    return check_config(read_json(p / CONFIG), p / CONFIG)


def load_artifact(path: str | Path, backbone: str | Path | None = None,
                  trust_remote_code: bool | None = None) -> Artifact:
    p = Path(path).expanduser()
    config = read_config(path)
    for name, sha in (config.get("files") or {}).items():  # what the config was committed with
        f = p / name
        if not f.is_file():
            raise EebertError(f"missing {name} in {path}", "re-create the artifact with `eebert attach`")
        if file_sha256(f) != sha:
            raise EebertError(f"{f} does not match the artifact's config: it was changed, truncated or left "
                              "half-replaced by an interrupted write", "re-create the artifact with `eebert attach`")
    source, revision = backbone_source(config["backbone"]) if backbone is None else (str(backbone), None)
    if backbone is None and revision is None and not Path(source).expanduser().exists():
        # --backbone is per command (the artifact keeps the path it was attached from)
        raise EebertError(f"the backbone {path} was attached to is no longer at {source}",
                          "pass --backbone NEW_PATH (checked against the recorded sha256) to this command, "
                          "or move the checkpoint back")
    deployed = load_deployed(source, trust_remote_code, revision)
    check_backbone(config, deployed)
    original = None
    trained = config["backbone"].get("trained")
    if trained:
        original, deployed = deployed, load_trained_backbone(deployed, p / trained["file"], trained["sha256"])
    try:
        exits = ExitSet(ExitSpec(**config["exits"]), deployed.adapter.dims)
        exits.load_state_dict(load_weights(p / WEIGHTS))
    except (TypeError, ValueError, KeyError, RuntimeError) as e:  # a hand-edited spec: not the weights' shapes
        raise EebertError(f"{p / CONFIG}: its exits do not describe {WEIGHTS} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})", EDITED) from None
    exits.eval()
    artifact = Artifact(p, config, deployed, exits, original)
    if exits.gates is not None:  # the gate threshold calibration chose, if any (none while it is stale)
        try:
            cal = artifact.calibration
        except EebertError:
            cal = None
        exits.gates.threshold = 0.5 if cal is None or cal.gate_threshold is None else cal.gate_threshold
    return artifact


EDITED = "re-create the artifact with `eebert attach` (its eebert_config.json was edited or written by another tool)"


def check_config(config, where: Path) -> dict:
    """eebert_config.json's shape, before anything reads it: a hand-edited or foreign file is one line, not a
    crash further on (the config is the one file of an artifact no hash covers)."""
    if not isinstance(config, dict):
        raise EebertError(f"{where} is not a JSON object", EDITED)
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise EebertError(f"{where.parent} has artifact format {version}, this eebert reads {FORMAT_VERSION}",
                          "re-create it with `eebert attach`")
    shapes = {"backbone": dict, "exits": dict, "labels": list, "max_length": int}
    for key, kind in shapes.items():
        value = config.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise EebertError(f"{where}: {key!r} is {'missing' if value is None else type(value).__name__}, "
                              f"not a {kind.__name__}", EDITED)
    if config["max_length"] < 1 or not isinstance(config["backbone"].get("path"), str):
        raise EebertError(f"{where}: max_length must be at least 1 and the backbone name its path", EDITED)
    layers = config["exits"].get("layers")
    if not isinstance(layers, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        raise EebertError(f"{where}: exits.layers must be a list of layer numbers, got {layers!r}", EDITED)
    return config


def backbone_source(recorded: dict) -> tuple[str, str | None]:
    """Where the recorded backbone is: its folder, else (a hub id's cache moved) the id at its recorded commit."""
    hub = recorded.get("hub")
    if hub and not Path(recorded["path"]).exists():
        return hub["id"], hub["revision"]
    return recorded["path"], None


def load_trained_backbone(original: Deployed, path: Path, sha256: str) -> Deployed:
    """The shipped model's architecture and tokenizer with the artifact's trained weights, hash-checked."""
    from ..backbones import adapter_for

    if not path.is_file():
        raise EebertError(f"missing {path.name} in {path.parent}: the artifact says its backbone was trained",
                          "re-create the artifact with `eebert attach`")
    digest = file_sha256(path)
    if digest != sha256:
        raise EebertError(f"{path} does not match the artifact (sha256 {digest[:12]}… != {sha256[:12]}…)",
                          "the file was changed or truncated; re-create the artifact with `eebert attach`")
    model = copy.deepcopy(original.model)
    model.load_state_dict(load_weights(path))
    model.eval()
    return Deployed(original.path, model, original.tokenizer, adapter_for(model), digest)
