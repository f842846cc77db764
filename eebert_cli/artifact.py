"""The eebert artifact: exit weights only, the backbone referenced and hash-checked.

    ARTIFACT/
      eebert_config.json   format version, backbone path + sha256, exits spec, labels
      exits.safetensors    exit weights (and gates; never the backbone's)
      backbone.safetensors only when the backbone was trained too (SmartBERT gates with
                           train_backbone): the whole changed model, its own sha256 in the config
      calibration.json     criterion, thresholds, validation estimate
      report.json, report.md, ...

Every file is written atomically (temp file + rename); a new artifact is built
in a temp directory and swapped in, so a crash leaves the old one intact.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from . import __version__
from .checkpoint import Deployed, load_deployed
from .errors import EebertError
from .exits import ExitSet, ExitSpec

FORMAT_VERSION = 1
CONFIG, WEIGHTS, CALIBRATION = "eebert_config.json", "exits.safetensors", "calibration.json"
BACKBONE_WEIGHTS = "backbone.safetensors"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EebertError(f"missing {path.name} in {path.parent}", "is this an eebert artifact?") from None
    except json.JSONDecodeError as e:
        raise EebertError(f"{path} is not valid JSON ({e.msg})", "re-create the artifact") from None


def save_artifact(out: Path, config: dict, exits: ExitSet, extra: dict[str, dict] | None = None) -> None:
    """Write the artifact atomically; ``extra`` maps further safetensors file names to tensors."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        state = {k: v.contiguous() for k, v in exits.state_dict().items()}
        save_file(state, tmp / WEIGHTS, metadata={"format": "pt", "eebert_format_version": str(FORMAT_VERSION)})
        for name, tensors in (extra or {}).items():
            # clone: a model's state dict may hold tensors sharing storage, which safetensors refuses
            save_file({k: v.detach().clone().contiguous() for k, v in tensors.items()}, tmp / name,
                      metadata={"format": "pt", "eebert_format_version": str(FORMAT_VERSION)})
        if (tmp / BACKBONE_WEIGHTS).exists():  # the hash refers to the new weights, as written
            config = {**config, "backbone": {**config["backbone"], "trained": {
                "file": BACKBONE_WEIGHTS, "sha256": file_sha256(tmp / BACKBONE_WEIGHTS)}}}
        write_json(tmp / CONFIG, config)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def make_config(deployed: Deployed, spec: ExitSpec, max_length: int, extra: dict) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "eebert_version": __version__,
        "backbone": {"path": str(deployed.path.resolve()), "sha256": deployed.sha256,
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

    @property
    def reference(self) -> Deployed:
        """The deployed model as shipped: what benchmarks compare against."""
        return self.original or self.deployed

    @property
    def changes_path(self) -> bool:
        """Whether the early-exit model's last exit differs from the deployed model (gates, trained or quantized backbone)."""
        return self.original is not None or self.exits.gates is not None

    @property
    def calibration(self) -> dict | None:
        """calibration.json as a dict (read through :class:`~eebert_cli.calibration.Calibration`), if any."""
        from .calibration import Calibration

        cal = Calibration.load(self.path)
        return None if cal is None else cal.to_dict()


def load_artifact(path: str | Path, backbone: str | Path | None = None,
                  trust_remote_code: bool | None = None) -> Artifact:
    p = Path(path).expanduser()
    if not (p / CONFIG).is_file():
        raise EebertError(f"not an eebert artifact: {path} (no {CONFIG})", "create one with `eebert attach`")
    config = read_json(p / CONFIG)
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise EebertError(f"{path} has artifact format {version}, this eebert reads {FORMAT_VERSION}",
                          "re-create it with `eebert attach`")
    source, revision = backbone_source(config["backbone"]) if backbone is None else (str(backbone), None)
    deployed = load_deployed(source, trust_remote_code, revision)
    if deployed.sha256 != config["backbone"]["sha256"]:
        raise EebertError(f"backbone weights at {deployed.path} do not match the artifact "
                          f"(sha256 {deployed.sha256[:12]}… != {config['backbone']['sha256'][:12]}…)",
                          "point --backbone at the checkpoint the exits were trained on, or re-run `eebert attach`")
    original = None
    trained = config["backbone"].get("trained")
    if trained:
        original, deployed = deployed, load_trained_backbone(deployed, p / trained["file"], trained["sha256"])
    exits = ExitSet(ExitSpec(**config["exits"]), deployed.adapter.dims)
    exits.load_state_dict(load_file(p / WEIGHTS))
    exits.eval()
    artifact = Artifact(p, config, deployed, exits, original)
    if exits.gates is not None:  # the gate threshold calibration chose, if any
        exits.gates.threshold = (artifact.calibration or {}).get("gate_threshold", 0.5)
    return artifact


def backbone_source(recorded: dict) -> tuple[str, str | None]:
    """Where the recorded backbone is: its folder, else (a hub id's cache moved) the id at its recorded commit."""
    hub = recorded.get("hub")
    if hub and not Path(recorded["path"]).exists():
        return hub["id"], hub["revision"]
    return recorded["path"], None


def load_trained_backbone(original: Deployed, path: Path, sha256: str) -> Deployed:
    """The shipped model's architecture and tokenizer with the artifact's trained weights, hash-checked."""
    from .backbones import adapter_for

    if not path.is_file():
        raise EebertError(f"missing {path.name} in {path.parent}: the artifact says its backbone was trained",
                          "re-create the artifact with `eebert attach`")
    digest = file_sha256(path)
    if digest != sha256:
        raise EebertError(f"{path} does not match the artifact (sha256 {digest[:12]}… != {sha256[:12]}…)",
                          "the file was changed or truncated; re-create the artifact with `eebert attach`")
    model = copy.deepcopy(original.model)
    model.load_state_dict(load_file(path))
    model.eval()
    return Deployed(original.path, model, original.tokenizer, adapter_for(model), digest)
