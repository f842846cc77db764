"""Local data files through `datasets` (Arrow, memory-mapped): whole, or streamed in batches.

CSV/TSV go through `datasets`' csv builder (pandas), JSON lines and JSON lists through its
json builder (pyarrow), parquet through pyarrow. When a builder fails, :func:`diagnose`
reads the file once more to name the file and line (bad encoding, bad JSON, a line that
is not an object), so the user gets one line instead of a pyarrow traceback.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from ..core.errors import EebertError

#: suffix -> (datasets builder, its extra arguments)
BUILDERS = {".csv": ("csv", {}), ".tsv": ("csv", {"sep": "\t"}), ".jsonl": ("json", {}), ".json": ("json", {}),
            ".parquet": ("parquet", {})}
READERS = (*BUILDERS, ".conll", ".txt")  # the suffixes a data file may have (CoNLL-style text: conll.py)


def quiet_datasets() -> None:
    """`datasets` logs and draws bars of its own; eebert reports through its own UI (its read errors too)."""
    import logging

    import datasets

    datasets.disable_progress_bars()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)


def builder_of(path: Path) -> tuple[str, dict]:
    try:
        return BUILDERS[path.suffix.lower()]
    except KeyError:
        raise EebertError(f"cannot read {path}: unknown file type {path.suffix!r}",
                          f"use one of {', '.join(READERS)}") from None


def reader_of(path: Path, text_columns: Iterable[str | None] = ()) -> tuple[str, dict]:
    """The builder for ``path`` and its arguments; a CSV/TSV's ``text_columns`` are read as the text written in
    the file: pandas would read a column of numbers ("007", 164) as numbers, which no quoting prevents. A TSV
    is read with CSV quoting unless it is written without (:func:`tsv_quoting`)."""
    builder, kw = builder_of(path)
    if builder != "csv":
        return builder, kw
    texts = [c for c in text_columns if c]
    kw = {**kw, "converters": {c: str for c in texts}}
    if path.suffix.lower() == ".tsv":
        kw["quoting"] = tsv_quoting(path)
    missing = _missing_cells(path, kw.get("sep", ","), kw.get("quoting", csv.QUOTE_MINIMAL), texts)
    if missing is not None:
        kw.update(keep_default_na=False, na_values=missing)
    return builder, kw


def _missing_cells(path: Path, sep: str, quoting: int, texts: list[str]) -> dict[str, list[str]] | None:
    """Per column, the cells pandas reads as missing: in a text column only the empty one, elsewhere pandas'
    own list ("NA", "None", "null", "nan", ...). A text that reads "None" or "N/A" (a survey's free answer) is
    text the deployed model answers, not a missing row. None (pandas' defaults everywhere) when the header
    cannot be read here; the builder then says what is wrong."""
    try:
        from pandas._libs.parsers import STR_NA_VALUES  # pandas' list, used as it is

        with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
            header = next(csv.reader(f, delimiter=sep, quoting=quoting), None)
    except (ImportError, csv.Error):
        return None
    if not header or not texts:
        return None
    return {c: [""] if c in texts else sorted(STR_NA_VALUES) for c in header}


_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")  #: pandas' parser, on a row too long
_QUOTED = re.compile(r'"(?:[^"]|"")*"')  #: a field written with CSV quoting


def tsv_quoting(path: Path) -> int:
    """``csv.QUOTE_NONE`` for a TSV written without quoting, as TSV is (GLUE's files: a text may open with a
    double quote it does not close, ``"Hi" she said``), else CSV quoting (pandas' ``to_csv(sep="\t")``).

    Read with CSV quoting, such a quote ran on over the rows after it up to the next quote: rows merged into
    one text, silently. Unquoted means every line has the header's number of fields and some field opens with
    a quote it does not close; a file whose quoted fields span lines keeps CSV quoting."""
    quoted, fields, opened = csv.QUOTE_MINIMAL, None, False
    if not _opens_a_quote(path):  # no field opens with a quote (most files): either reading is the same
        return quoted
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        for line in f:
            parts = line.rstrip("\r\n").split("\t")
            if fields is None:
                fields = len(parts)
            elif line.strip() and len(parts) != fields:
                return quoted  # a quoted field holds a tab or a line break: CSV quoting reads it
            opened = opened or any(p.startswith('"') and not _QUOTED.fullmatch(p) for p in parts)
    return csv.QUOTE_NONE if opened else quoted


def _opens_a_quote(path: Path) -> bool:
    """Whether a field of the TSV may open with a double quote (after a tab or at a line's start): a byte
    search, so a large file without one costs little."""
    with path.open("rb") as f:
        block, last = f.read(1 << 20).removeprefix(b"\xef\xbb\xbf"), b"\n"  # the start is a line's start
        while block:
            joined = last + block
            if b'\t"' in joined or b'\n"' in joined:
                return True
            last, block = block[-1:], f.read(1 << 20)
    return False


def load_file(path: Path, tokens_column: str = "tokens", tags_column: str = "ner_tags",
              text_columns: Iterable[str | None] = ()):
    """One data file as a `datasets.Dataset` (cached as Arrow under HF_DATASETS_CACHE, memory-mapped);
    a CoNLL-style text file as words and tags in the named columns. ``text_columns``: see :func:`reader_of`."""
    import datasets

    from .conll import SUFFIXES, read_conll

    if path.suffix.lower() in SUFFIXES:
        return read_conll(path, tokens_column, tags_column)

    builder, kw = reader_of(path, text_columns)
    quiet_datasets()
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", **kw)
        if builder == "json":  # pyarrow's JSON reader passes bad UTF-8 through; a full validation catches it
            ds.data.table.validate(full=True)
        return ds
    except Exception as e:  # noqa: BLE001 - every builder failure is answered from the file itself
        raise diagnose(path, e) from None


def stream_file(path: Path, batch_size: int, text_columns: Iterable[str | None] = ()) -> Iterator[dict[str, list]]:
    """Batches of rows (column -> values), in file order, without reading the whole file."""
    import datasets

    builder, kw = reader_of(path, text_columns)
    quiet_datasets()
    stream = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **kw)
    try:
        yield from stream.iter(batch_size=batch_size)
    except EebertError:
        raise
    except Exception as e:  # noqa: BLE001
        raise diagnose(path, e) from None


def count_rows(path: Path) -> int | None:
    """Rows in a file, cheaply (parquet metadata; lines otherwise): the progress bar's total."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows
        except Exception as e:  # noqa: BLE001 - not parquet, or truncated: said from the file
            raise diagnose(path, e) from None
    if path.suffix.lower() == ".json":
        return None
    n = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
    return max(0, n - (1 if path.suffix.lower() in (".csv", ".tsv") else 0))


def diagnose(path: Path, error: Exception) -> EebertError:
    """Why a builder could not read ``path``: the first bad line, else the builder's own words."""
    suffix = path.suffix.lower()
    if suffix != ".parquet":
        filled = 0  # lines with something on them
        with path.open("rb") as f:
            for n, raw in enumerate(f, 1):
                filled += bool(raw.strip())
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    return EebertError(f"{path}:{n} is not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})",
                                       "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")
                if suffix in (".jsonl", ".json") and line.strip():
                    bad = _json_line(line.lstrip("\ufeff"))
                    if bad and not (suffix == ".json" and n == 1 and line.lstrip("\ufeff").lstrip()[:1] == "["):
                        return EebertError(f"{path}:{n} {bad}", "write one JSON object per line, e.g. "
                                                                '{"text": "...", "label": "..."}')
        if filled <= (1 if suffix in (".csv", ".tsv") else 0):  # the builder's "corresponds to no data"
            return EebertError(f"{path} has no rows (a header at most)", "give a file with a header and rows")
    cause = error.__cause__ or error.__context__ or error
    text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    extra = _FIELDS.search(text) if suffix in (".csv", ".tsv") else None
    if extra:  # pandas' words for the commonest broken CSV: a text with a comma in it, unquoted
        want, line, saw = extra.groups()
        example = "a tab" if suffix == ".tsv" else 'a comma, as in "I loved it, really"'
        return EebertError(f"{path}:{line} has {saw} fields where the header has {want}",
                           f"quote a text that holds {example}")
    return EebertError(f"cannot read {path}: {text}", "check that the file is a well-formed "
                       f"{suffix.lstrip('.').upper()} file with a header row / one record per row")


def _json_line(line: str) -> str | None:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return f"is not valid JSON ({e.msg})"
    if not isinstance(value, dict):
        return f"is a JSON {type(value).__name__}, not an object"
    return None


def is_saved_dataset(path: Path) -> bool:
    """A directory written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file())
