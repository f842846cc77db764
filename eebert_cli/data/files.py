"""Read local data files into lists of row dicts (standard library + pyarrow only)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import EebertError


def _csv(path: Path, delimiter: str) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def _jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise EebertError(f"{path}:{n} is not valid JSON ({e.msg})",
                                      "write one JSON object per line") from None
    return rows


def _json(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return _jsonl(path)  # many ".json" files are really JSON lines
    if not isinstance(data, list):
        raise EebertError(f"{path} is not a list of records", "write a JSON list of objects or JSON lines")
    return data


def _parquet(path: Path) -> list[dict]:
    import pyarrow.parquet as pq  # a dependency of `datasets`

    return pq.read_table(path).to_pylist()


READERS = {".csv": lambda p: _csv(p, ","), ".tsv": lambda p: _csv(p, "\t"), ".jsonl": _jsonl,
           ".json": _json, ".parquet": _parquet}


def read_rows(path: Path) -> list[dict]:
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise EebertError(f"cannot read {path}: unknown file type {path.suffix!r}",
                          f"use one of {', '.join(READERS)}")
    return reader(path)
