"""The eebert artifact: exit weights only, the backbone referenced and hash-checked.

    ARTIFACT/
      eebert_config.json   format version, backbone path + sha256, exits spec, labels
      exits.safetensors    exit weights (never the backbone's)
      calibration.json     criterion, thresholds, validation estimate
      report.json, report.md, ...

Every file is written atomically (temp file + rename); a new artifact is built
in a temp directory and swapped in, so a crash leaves the old one intact.
"""

from __future__ import annotations

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
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / name,
                      metadata={"format": "pt", "eebert_format_version": str(FORMAT_VERSION)})
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
                     "num_layers": deployed.adapter.dims.num_layers},
        "labels": [deployed.id2label[i] for i in range(len(deployed.id2label))],
        "exits": spec.to_dict(),
        "max_length": max_length,
        **extra,
    }


@dataclass
class Artifact:
    path: Path
    config: dict
    deployed: Deployed
    exits: ExitSet

    @property
    def calibration(self) -> dict | None:
        f = self.path / CALIBRATION
        return read_json(f) if f.exists() else None


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
    deployed = load_deployed(backbone or config["backbone"]["path"], trust_remote_code)
    if deployed.sha256 != config["backbone"]["sha256"]:
        raise EebertError(f"backbone weights at {deployed.path} do not match the artifact "
                          f"(sha256 {deployed.sha256[:12]}… != {config['backbone']['sha256'][:12]}…)",
                          "point --backbone at the checkpoint the exits were trained on, or re-run `eebert attach`")
    exits = ExitSet(ExitSpec(**config["exits"]), deployed.adapter.dims)
    exits.load_state_dict(load_file(p / WEIGHTS))
    exits.eval()
    return Artifact(p, config, deployed, exits)
