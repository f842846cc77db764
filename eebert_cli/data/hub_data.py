"""A Hugging Face dataset id, read from the local caches (offline first, see hub.py).

First the hub cache (``datasets--org--name/snapshots/<commit>/``, what ``hf download
--repo-type dataset`` writes): the snapshot folder is read as a local dataset
repository (its README's ``configs``, else a ``CONFIG/`` sub-folder, split files
named train/validation/test). Else `datasets`' own cache (what an earlier
``load_dataset(id, config)`` left), asked with downloads off.
"""

from __future__ import annotations

from pathlib import Path

from ..core.errors import EebertError
from ..core.hub import offline, resolve
from . import files


def load_hub_dataset(repo_id: str, config: str | None, revision: str | None,
                     text_columns: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """(split name -> Dataset, provenance) for ``repo_id``; ``text_columns``: see ``files.reader_of``."""
    try:
        ref = resolve(repo_id, "dataset", revision)
    except EebertError as miss:
        parts = from_datasets_cache(repo_id, config, revision) if offline() else None
        if parts is None:
            raise miss
        return parts, {"id": repo_id, "type": "dataset", "config": config, "revision": revision,
                       "cache": "datasets"}
    return load_snapshot(ref.path, config, repo_id, text_columns), {**ref.to_dict(), "config": config}


def load_snapshot(path: Path, config: str | None, repo_id: str, text_columns: tuple[str, ...] = ()) -> dict:
    import datasets

    from .files import is_saved_dataset

    files.quiet_datasets()
    folder = path / config if config and (path / config).is_dir() else path
    if is_saved_dataset(folder):  # a save_to_disk layout pushed as is
        loaded = datasets.load_from_disk(str(folder))
        return dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    if readme_configs(path):  # the repository says which files make which split: `datasets` reads it
        try:
            return dict(datasets.load_dataset(str(path), **({"name": config} if config else {})))
        except Exception as e:  # noqa: BLE001 - a cached repo that `datasets` cannot read is one answer
            raise EebertError(f"cannot read dataset {repo_id!r} from {path} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''})",
                              "check --data-config and that the cached snapshot is complete") from None
    configs = config_folders(path)
    if config and folder == path:
        raise EebertError(f"dataset {repo_id!r} has no config {config!r} (configs: {', '.join(configs) or 'none'})",
                          "name one of its configs with --data-config, or none")
    parts = split_files(folder)
    if not parts and not config and len(configs) > 1:  # `datasets` would merge every config into one
        raise EebertError(f"dataset {repo_id!r} has several configs ({', '.join(configs)}) and no --data-config",
                          f"name one with --data-config (e.g. --data-config {configs[0]}) or --data {repo_id}:NAME")
    if not parts and not config and len(configs) == 1:
        parts = split_files(path / configs[0])
    if not parts:
        raise EebertError(f"dataset {repo_id!r} at {folder} holds no data files ({', '.join(files.READERS)})",
                          "check --data-config and that the cached snapshot is complete")
    # each split by its own file name, as a folder given with --data is read: `datasets`' own
    # pattern matching would rename dev.csv to validation and drop a split called heldout
    def read(f: Path):
        return files.load_file(f, text_columns=text_columns)

    return {name: datasets.concatenate_datasets([read(f) for f in fs]) if len(fs) > 1 else read(fs[0])
            for name, fs in parts.items()}


def split_files(folder: Path) -> dict[str, list[Path]]:
    """Data files directly in ``folder`` (or its ``data/``), by split name: ``dev.csv`` -> dev,
    ``train-00000-of-00002.parquet`` -> train (shards in name order)."""
    import re

    out: dict[str, list[Path]] = {}
    for where in (folder, folder / "data"):
        if where.is_dir():
            for f in sorted(where.iterdir()):
                if f.is_file() and f.suffix.lower() in files.READERS:
                    out.setdefault(re.sub(r"-\d{5}-of-\d{5}$", "", f.stem), []).append(f)
        if out:
            break
    return out


def config_folders(path: Path) -> list[str]:
    """Sub-folders of a snapshot that hold data files: its configs when the README declares none."""
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "data"
                  and split_files(p))


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
