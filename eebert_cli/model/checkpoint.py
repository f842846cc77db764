"""Load a deployed sequence classifier from a local directory or a hub id in the HF cache, safely.

Safetensors only (loading never unpickles), no remote code unless asked; hub ids
resolve through the local cache first (see hub.py, where path vs id is decided).
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import torch
from dataclasses import dataclass
from pathlib import Path

from ..backbones import BackboneAdapter, adapter_for
from ..core.errors import EebertError
from ..core.hub import MODEL_FILES, HubRef, is_hub_id, resolve
from ..tasks import task_of


def weight_files(path: Path) -> list[Path]:
    return sorted(path.glob("*.safetensors"))


def _feed(digest, path: Path) -> None:
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)


#: hashes by the files' identity and stat: a process that loads one checkpoint or artifact many times
#: (`compare`: two loads per calibrated cell) reads its hundreds of MB once
_WEIGHT_HASHES: dict[tuple, str] = {}
_FILE_HASHES: dict[tuple, str] = {}
#: a file changed less than this long ago may change again within the clock's granularity unseen by
#: its stat (git's "racily clean" entries): such hashes are not remembered
RACY_NS = 2_000_000_000


def stat_key(files: list[Path]) -> tuple | None:
    """The files' identity as the file system reports it, or None when one was modified too recently
    for its stat to be trusted: a cached result keyed by it stays valid while the key does."""
    key, now = [], time.time_ns()
    for f in files:
        st = f.stat()
        if now - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_NS:
            return None
        key.append((str(f.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(key)


def file_sha256(path: Path) -> str:
    key = stat_key([path])
    if key is not None and key in _FILE_HASHES:
        return _FILE_HASHES[key]
    digest = hashlib.sha256()
    _feed(digest, path)
    if key is not None:
        _FILE_HASHES[key] = digest.hexdigest()
    return digest.hexdigest()


def weights_sha256(path: Path) -> str:
    """sha256 over the checkpoint's safetensors files, in name order."""
    files = weight_files(path)
    key = stat_key(files)
    if key is not None and key in _WEIGHT_HASHES:
        return _WEIGHT_HASHES[key]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        _feed(digest, f)
    if key is not None:
        _WEIGHT_HASHES[key] = digest.hexdigest()
    return digest.hexdigest()


#: What else decides the deployed model's answers besides its weights: the config (labels,
#: problem type, architecture sizes) and the tokenizer. Hashed per file so that a mismatch can be named.
FINGERPRINT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                     "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spm.model", "spiece.model",
                     "sentencepiece.bpe.model", "tokenizer.model")


def fingerprint_files(path: Path) -> dict[str, str]:
    """sha256 of the checkpoint's config and tokenizer files (the weights have ``weights_sha256``)."""
    return {n: file_sha256(path / n) for n in FINGERPRINT_FILES if (path / n).is_file()}


@dataclass
class Deployed:
    path: Path
    model: object
    tokenizer: object
    adapter: BackboneAdapter
    sha256: str
    hub: HubRef | None = None  #: set when the checkpoint was named by hub id

    @property
    def id2label(self) -> dict[int, str]:
        return {int(k): v for k, v in self.model.config.id2label.items()}

    @property
    def label2id(self) -> dict[str, int]:
        return {v: k for k, v in self.id2label.items()}


def locate(spec: str | Path, revision: str | None = None) -> tuple[Path, HubRef | None]:
    """The local folder of a checkpoint named by path or by hub id (an existing path wins)."""
    if isinstance(spec, str) and is_hub_id(spec):
        ref = resolve(spec, "model", revision, allow_patterns=MODEL_FILES)
        return ref.path, ref
    return Path(spec).expanduser(), None


def check_checkpoint(path: str | Path) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise EebertError(f"checkpoint not found: {path}",
                          "pass a local directory with config.json and model.safetensors, or a hub id (org/name)")
    if not (p / "config.json").is_file():
        raise EebertError(f"{path} is not a Hugging Face checkpoint (no config.json)",
                          "pass the directory that save_pretrained() wrote")
    try:
        cfg = json.loads((p / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise EebertError(f"{path}/config.json is not valid JSON ({e.msg})", "re-save the checkpoint") from None
    archs = cfg.get("architectures") or []
    if not any(a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in archs):
        kind = ", ".join(archs) or "a model without a declared architecture"
        raise EebertError(f"{path} is not a sequence or token classifier (it is {kind})",
                          "eebert speeds up fine-tuned *ForSequenceClassification and *ForTokenClassification "
                          "checkpoints")
    if not weight_files(p):
        raise EebertError(f"{path} has no .safetensors weights",
                          "eebert never unpickles .bin files; re-save with save_pretrained(safe_serialization=True)")
    for f in weight_files(p):
        check_safetensors(f)
    if not any((p / n).is_file() for n in TOKENIZER_FILES):
        # transformers would build a near-empty tokenizer from config.json alone: every word [UNK]
        raise EebertError(f"{path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)})",
                          "save the tokenizer next to the model with tokenizer.save_pretrained()")
    return p


#: Files that hold a tokenizer's vocabulary (tokenizer_config.json alone does not).
TOKENIZER_FILES = tuple(n for n in FINGERPRINT_FILES if n not in ("config.json", "tokenizer_config.json",
                                                                   "special_tokens_map.json", "added_tokens.json"))


def check_safetensors(f: Path) -> None:
    """A weights file must be whole: its header parses and the tensors it lists end where the file ends."""
    size = f.stat().st_size
    problem = None
    try:
        with f.open("rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or n > size - 8:
                problem = f"{size} bytes, shorter than its header says"
            else:
                header = json.loads(fh.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                if 8 + n + end != size:
                    problem = f"{size} bytes, its header lists {8 + n + end}"
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as e:
        problem = f"unreadable header: {type(e).__name__}"
    if problem:
        raise EebertError(f"{f} is truncated or damaged ({problem})",
                          "copy the checkpoint again (or re-save it with save_pretrained)")


#: Set by ``eebert --trust-remote-code``; off unless the user asks (loading must not run code).
#: ``eebert --trust-remote-code`` sets this variable: an environment variable, not a module global, so
#: the choice reaches Ray workers and server processes too
TRUST_REMOTE_CODE_ENV = "EEBERT_TRUST_REMOTE_CODE"


def load_deployed(path: str | Path, trust_remote_code: bool | None = None, revision: str | None = None) -> Deployed:
    """``path``: a checkpoint folder or a hub id; ``revision`` pins a hub id's commit."""
    if trust_remote_code is None:
        trust_remote_code = os.environ.get(TRUST_REMOTE_CODE_ENV, "") not in ("", "0")
    local, ref = locate(path, revision)
    p = check_checkpoint(local)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        archs = json.loads((p / "config.json").read_text()).get("architectures") or []
        auto = (AutoModelForTokenClassification if any(a.endswith("ForTokenClassification") for a in archs)
                else AutoModelForSequenceClassification)  # a tagger keeps its per-token classifier
        model = auto.from_pretrained(
            p, use_safetensors=True, local_files_only=True, trust_remote_code=trust_remote_code)
    except ValueError as e:
        raise EebertError(f"cannot load {path}: {str(e).splitlines()[0]}",
                          "run `eebert --trust-remote-code ...` only if you trust this checkpoint's code") from None
    adapter = adapter_for(model)
    try:
        tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise EebertError(f"no usable tokenizer in {path} ({str(e).splitlines()[0]})",
                          "save the tokenizer next to the model with tokenizer.save_pretrained()") from None
    for param in model.parameters():
        param.requires_grad_(False)
    return Deployed(p, model, tokenizer, adapter, weights_sha256(p), ref)


def gold_labels(deployed: Deployed, data, split: str) -> torch.Tensor | None:
    """The split's gold labels as the model's targets, converted a batch of rows at a time (RAM
    holds the tensor, not a Python object per row); None when the data have no labels."""
    s = data.split(split)
    if s.label_column is None:
        return None
    task, source, n = task_of(deployed.model.config), f"the {split} split of {data.name}", len(deployed.id2label)
    parts = [task.gold(s.named_labels(batch, deployed.label2id), deployed.label2id, n, source)
             for batch in s.iter_values(s.label_column)]
    return torch.cat(parts) if parts else task.gold([], deployed.label2id, n, source)
