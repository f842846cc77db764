"""Open a data spec: which kind of source it is, its splits by name, and which is train/validation/test.

The order decides: a built-in corpus name, then a path that exists (a save_to_disk
directory, a directory of split files, or one file), then a Hugging Face dataset id
(hub.py holds the path-versus-id rule). ``split_map`` names a source's own splits
where they differ from train/validation/test; an entry naming a split the source
lacks fails here, before any model work.
"""

from __future__ import annotations

import random
from pathlib import Path

from ..core.errors import EebertError
from . import corpora, files
from .files import is_saved_dataset
from .spec import SPLITS, DataConfig, Split, TaskData, columns, seeded_split

ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val", "dev"), "test": ("test",)}


def text_columns_of(cfg: DataConfig) -> tuple[str, ...]:
    """The columns read as text (a CSV's, as written: ``files.reader_of``)."""
    return tuple(c for c in (cfg.text_column, cfg.pair_column) if c)


def check_spec(cfg: DataConfig) -> None:
    """What :func:`open_spec` refuses without reading a row (the split map; a spec that is no corpus, no path
    here and no dataset id): the steps ask it before a model loads."""
    check_split_map(cfg.split_map)
    if cfg.spec in corpora.CORPORA and not Path(cfg.spec).exists():
        check_corpus_settings(cfg)
        return
    if Path(cfg.spec).expanduser().exists():
        return
    from ..core.hub import is_hub_id

    if not is_hub_id(parse_id(cfg)[0]):
        raise EebertError(f"data not found: {cfg.spec}", "give an existing file or directory, a dataset id "
                          f"(org/name, name:config), or a built-in corpus: {', '.join(corpora.CORPORA)}")


#: settings that pick a source's columns and splits: a built-in corpus has its own
CORPUS_FIXED = ("text_column", "pair_column", "label_column", "tokens_column", "tags_column", "config", "split_map")


def check_corpus_settings(cfg: DataConfig) -> None:
    """A built-in corpus's columns and splits are fixed (corpora.py): a setting that would pick others is
    refused, not ignored."""
    from dataclasses import fields

    from ..core.checks import flag_of

    default = DataConfig()
    for f in fields(cfg):
        if f.name in CORPUS_FIXED and getattr(cfg, f.name) != getattr(default, f.name):
            flag = flag_of(f)
            raise EebertError(f"{flag} ({f.name}) does not apply to the built-in corpus {cfg.spec}: its columns and "
                              "train/validation/test splits are fixed", f"drop {flag}, or give a data file or "
                              "dataset id whose columns it names")


def open_spec(cfg: DataConfig) -> tuple[dict[str, Split], dict | None]:
    """Checked splits (train/validation/test) of ``cfg.spec`` and, for a hub id, where it resolved to."""
    check_spec(cfg)
    if cfg.spec in corpora.CORPORA and not Path(cfg.spec).exists():
        return corpora.load(cfg.spec), None
    path = Path(cfg.spec).expanduser()
    if path.exists():
        if is_saved_dataset(path):
            return from_saved(path, cfg), None
        if path.is_dir():
            return from_directory(path, cfg), None
        return from_table(files.load_file(path, cfg.tokens_column, cfg.tags_column, text_columns_of(cfg)), cfg,
                          str(path)), None
    spec, config = parse_id(cfg)
    from .hub_data import load_hub_dataset

    parts, source = load_hub_dataset(spec, config, cfg.revision, text_columns_of(cfg))
    return from_parts(parts, cfg, spec), source


def parse_id(cfg: DataConfig) -> tuple[str, str | None]:
    """``glue:sst2`` -> (glue, sst2); ``org/name`` with ``config`` -> (org/name, config)."""
    spec, _, config = cfg.spec.partition(":")
    if config and cfg.config and config != cfg.config:
        raise EebertError(f"--data {cfg.spec} names config {config!r} but --data-config says {cfg.config!r}",
                          "give the config once")
    return spec, (config or cfg.config or None)


def check_split_map(split_map: dict[str, str]) -> None:
    bad = sorted(set(split_map) - set(SPLITS))
    if bad:
        raise EebertError(f"--split-map names {bad[0]!r}, which is not one of {', '.join(SPLITS)}",
                          "map eebert's splits onto the data's own, e.g. --split-map validation=dev,test=eval")


def assign(names: list[str], split_map: dict[str, str], source: str) -> dict[str, str]:
    """train/validation/test -> the source's own split name (explicit map first, then usual aliases)."""
    missing = [v for v in split_map.values() if v not in names]
    if missing:
        raise EebertError(f"{source} has no split {missing[0]!r} (it has: {', '.join(names) or 'none'})",
                          "fix --split-map (split_map in a recipe) to name splits the data has")
    out = dict(split_map)
    for split, aliases in ALIASES.items():
        if split not in out:
            hit = next((n for n in names for a in aliases if n.lower() == a and n not in out.values()), None)
            if hit is not None:
                out[split] = hit
    return out


def from_parts(parts: dict, cfg: DataConfig, source: str) -> dict[str, Split]:
    """Splits from a mapping of the source's split names to datasets (save_to_disk, hub)."""
    names = list(parts)
    chosen = assign(names, cfg.split_map, source)
    if not chosen and len(names) == 1:  # one unnamed split: treat it like a single file
        return from_table(parts[names[0]], cfg, f"{source} ({names[0]})")
    if not chosen:
        raise EebertError(f"{source} has no train/validation/test splits (it has: {', '.join(names)})",
                          "name them with --split-map train=NAME,validation=NAME,test=NAME")
    return {s: columns(parts[n], cfg, f"{source} ({n} split)") for s, n in chosen.items()}


def from_table(ds, cfg: DataConfig, source: str) -> dict[str, Split]:
    """One table: by its ``split`` column when it has one, else a seeded 80/10/10 split."""
    if len(ds) == 0:
        raise EebertError(f"data file {source} is empty", "give a file with a header and at least one row")
    whole = columns(ds, cfg, source)  # rows checked once, numbered as in the file
    if "split" not in ds.column_names:
        return {s: whole.subset(idx) for s, idx in seeded_split(len(ds), cfg.seed).items()}
    values = [str(v).strip() for v in ds["split"]]
    assign(sorted(set(values)), cfg.split_map, source)  # a mapped split the column lacks fails here
    inverse = {v: k for k, v in cfg.split_map.items()}
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        split = inverse.get(v) or next((s for s, al in ALIASES.items() if v.lower() in al and s not in cfg.split_map),
                                       None)
        if split is None:
            raise EebertError(f"{source}: unknown split value {v!r} (row {i + 1})",
                              "use train, validation or test in the split column, or map it with --split-map")
        groups.setdefault(split, []).append(i)
    return {s: whole.subset(idx) for s, idx in groups.items()}


def from_directory(path: Path, cfg: DataConfig) -> dict[str, Split]:
    stems: dict[str, Path] = {}
    for p in sorted(path.iterdir()):
        if p.is_file() and p.suffix.lower() in files.READERS:
            stems.setdefault(p.stem, p)
    chosen = assign(list(stems), cfg.split_map, str(path))
    if not chosen:
        raise EebertError(f"directory {path} holds no train/validation/test data files",
                          f"name them like train.csv, validation.csv, test.csv ({', '.join(files.READERS)}), "
                          "or map other names with --split-map")
    out = {}
    for split, stem in chosen.items():
        f = stems[stem]
        ds = files.load_file(f, cfg.tokens_column, cfg.tags_column, text_columns_of(cfg))
        if len(ds) == 0:
            raise EebertError(f"data file {f} is empty", "give a file with a header and at least one row")
        out[split] = columns(ds, cfg, str(f))
    return out


def from_saved(path: Path, cfg: DataConfig) -> dict[str, Split]:
    import datasets

    files.quiet_datasets()
    try:
        loaded = datasets.load_from_disk(str(path))  # memory-mapped Arrow files, nothing copied
    except Exception as e:  # noqa: BLE001
        bad = damaged_arrow_file(path)
        what = (f"{bad[0]} is truncated or corrupt ({bad[1]})" if bad else
                f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        raise EebertError(f"cannot read the saved dataset {path}: {what}",
                          "copy it again, or re-save it with Dataset.save_to_disk / DatasetDict.save_to_disk") from None
    if isinstance(loaded, datasets.DatasetDict):
        return from_parts(dict(loaded), cfg, str(path))
    return from_table(loaded, cfg, str(path))


def load_data(cfg: DataConfig) -> TaskData:
    if not cfg.spec:
        raise EebertError("no data given", "pass --data with a corpus name, a file, a directory or a dataset id")
    splits, source = open_spec(cfg)
    if cfg.max_samples:
        rng = random.Random(cfg.seed)
        splits = {k: (v.subset(sorted(rng.sample(range(len(v)), cfg.max_samples)))
                      if len(v) > cfg.max_samples else v) for k, v in splits.items()}
    return TaskData(cfg.spec, splits, source)


def damaged_arrow_file(path: Path) -> tuple[Path, str] | None:
    """The first Arrow file under a save_to_disk folder that does not read whole, and why."""
    import pyarrow as pa

    for f in sorted(path.rglob("*.arrow")):
        try:
            with pa.memory_map(str(f)) as source:  # mapped: reading it through copies nothing
                reader = pa.ipc.open_stream(source)
                for _ in reader:
                    pass
        except (pa.ArrowInvalid, OSError) as e:
            return f, str(e).splitlines()[0] if str(e) else type(e).__name__
    return None
