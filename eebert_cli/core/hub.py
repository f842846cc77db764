"""Hugging Face hub ids (``org/name``) for checkpoints and datasets, resolved through the local HF cache.

This module is the one place that decides "local path or hub id": a path that
exists always wins (:func:`is_hub_id`). An id is then looked up in the hub cache
(``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and
only downloaded when the cache lacks it, ``HF_HUB_OFFLINE`` is not set and the
caller allows it. The eebert CLI sets ``HF_HUB_OFFLINE=1`` unless the user set it,
so downloading is opt-in (``HF_HUB_OFFLINE=0``). A checkpoint download takes
config, tokenizer and ``.safetensors`` files only: no pickles, no code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import EebertError

#: what a checkpoint download may fetch: never *.bin (pickle) or *.py (remote code)
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]

_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubRef:
    """A resolved hub repository: where its snapshot lies and which commit it is."""

    repo_id: str
    repo_type: str      #: "model" or "dataset"
    revision: str       #: the commit hash of the snapshot
    path: Path          #: the snapshot folder in the cache

    def to_dict(self) -> dict:
        return {"id": self.repo_id, "type": self.repo_type, "revision": self.revision}


def is_hub_id(spec: str) -> bool:
    """True when ``spec`` names a hub repository rather than a local path (an existing path wins)."""
    if Path(spec).expanduser().exists():
        return False
    return bool(_ID.match(spec)) and not spec.endswith((".csv", ".tsv", ".json", ".jsonl", ".parquet"))


def offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def resolve(repo_id: str, repo_type: str = "model", revision: str | None = None,
            allow_download: bool = True, allow_patterns: list[str] | None = None) -> HubRef:
    """The cached snapshot of ``repo_id`` (at ``revision``, default the ``main`` ref), offline first."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    what = "checkpoint" if repo_type == "model" else "dataset"
    kw = dict(repo_type=repo_type, revision=revision, cache_dir=hub_cache(), allow_patterns=allow_patterns)
    try:
        path = snapshot_download(repo_id, local_files_only=True, **kw)
    except LocalEntryNotFoundError:
        if offline() or not allow_download:
            at = f" at revision {revision}" if revision else ""
            raise EebertError(f"{what} {repo_id!r}{at} is not a local path and not in the Hugging Face cache "
                              f"({hub_cache()})",
                              f"download it once (`hf download {repo_id}"
                              f"{' --repo-type dataset' if repo_type == 'dataset' else ''}`) or run with "
                              "HF_HUB_OFFLINE=0 to let eebert fetch it; or give a local path") from None
        path = download(repo_id, kw)
    path = Path(path)
    commit = path.name if _COMMIT.match(path.name) else (revision or "")
    if revision and _COMMIT.match(revision) and commit != revision:
        raise EebertError(f"{what} {repo_id!r} resolved to revision {commit}, not the recorded {revision}",
                          "restore that revision in the cache or re-run `eebert attach`")
    return HubRef(repo_id, repo_type, commit, path)


def download(repo_id: str, kw: dict) -> str:
    """The one call that reaches the network (only when the cache misses and downloading is allowed)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo_id, **kw)
    except Exception as e:  # noqa: BLE001 - any hub failure is the same answer to the user
        raise EebertError(f"cannot fetch {repo_id!r} from the Hugging Face hub ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})",
                          "check the id and your network, or give a local path") from None
