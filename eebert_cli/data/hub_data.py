"""A Hugging Face dataset id, read from the local caches (offline first, see hub.py).

First the hub cache (``datasets--org--name/snapshots/<commit>/``, what ``hf download
--repo-type dataset`` writes): the snapshot folder is read as a local dataset
repository (its README's ``configs``, else a ``CONFIG/`` sub-folder, split files
named train/validation/test). Else `datasets`' own cache (what an earlier
``load_dataset(id, config)`` left), asked with downloads off.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EebertError
from ..hub import offline, resolve
from . import files


def load_hub_dataset(repo_id: str, config: str | None, revision: str | None) -> tuple[dict, dict]:
    """(split name -> Dataset, provenance) for ``repo_id``."""
    try:
        ref = resolve(repo_id, "dataset", revision)
    except EebertError as miss:
        parts = from_datasets_cache(repo_id, config, revision) if offline() else None
        if parts is None:
            raise miss
        return parts, {"id": repo_id, "type": "dataset", "config": config, "revision": revision,
                       "cache": "datasets"}
    return load_snapshot(ref.path, config, repo_id), {**ref.to_dict(), "config": config}


def load_snapshot(path: Path, config: str | None, repo_id: str) -> dict:
    import datasets

    from .files import is_saved_dataset

    files.quiet_datasets()
    folder = path / config if config and (path / config).is_dir() else path
    if is_saved_dataset(folder):  # a save_to_disk layout pushed as is
        loaded = datasets.load_from_disk(str(folder))
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    kw: dict = {}
    if config:
        if readme_configs(path):
            kw["name"] = config
        elif folder != path:
            kw["data_dir"] = config
        else:
            subdirs = sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
            raise EebertError(f"dataset {repo_id!r} has no config {config!r} (configs: {', '.join(subdirs) or 'none'})",
                              "name one of its configs with --data-config, or none")
    try:
        return dict(datasets.load_dataset(str(path), **kw))
    except Exception as e:  # noqa: BLE001 - a cached repo that `datasets` cannot read is one answer
        raise EebertError(f"cannot read dataset {repo_id!r} from {path} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})",
                          "check --data-config and that the cached snapshot is complete") from None


def readme_configs(path: Path) -> bool:
    readme = path / "README.md"
    return readme.is_file() and "\nconfigs:" in readme.read_text(encoding="utf-8", errors="replace")


def from_datasets_cache(repo_id: str, config: str | None, revision: str | None) -> dict | None:
    """What `datasets` cached for this id earlier, or None; never downloads (it runs only when offline)."""
    import datasets

    files.quiet_datasets()
    try:
        loaded = datasets.load_dataset(repo_id, config, revision=revision,
                                       download_config=datasets.DownloadConfig(local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached there either: the caller reports the miss
        return None
    return dict(loaded)
