"""Row checks on the columns eebert reads, run once per source before any long work.

Each failure is one :class:`EebertError` naming the source, the row and the column: a null
or missing text (a JSON ``null`` must not become the string "None"), text that is not a
string, an empty or NaN label. Checks run on Arrow columns, so they cost little on large data.
"""

from __future__ import annotations

import json

from ..core.errors import EebertError


def _column(ds, col: str):
    """The column as Arrow holds it (chunked, memory-mapped for file-backed data): never combined,
    which would copy a whole column into RAM."""
    import pyarrow as pa

    arr = ds.column(col) if isinstance(ds, pa.Table) else ds.data.column(col)  # sources are checked
    return arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])  # before any select()


def _chunks(arr):
    """(first row, chunk) over a chunked column: checks read one chunk at a time."""
    start = 0
    for chunk in arr.chunks:
        yield start, chunk
        start += len(chunk)


def _first_where(arr, test) -> int | None:
    """0-based row of the first value where ``test(chunk)`` (a boolean array) holds, or None."""
    import pyarrow.compute as pc

    for start, chunk in _chunks(arr):
        mask = test(chunk)
        if pc.any(mask).as_py():
            return start + _first(mask)
    return None


def _first(mask) -> int:
    import pyarrow.compute as pc

    return int(pc.index(mask, True).as_py())


def _is_text_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def check_columns(ds, text: str, pair: str | None, label: str | None, source: str,
                  flag: str | None = "--label-column") -> None:
    """Raise on the first bad row of ``ds`` (a `datasets.Dataset` or a pyarrow Table) in these columns."""
    for col, what in ((text, "text"), (pair, "pair")):
        if col is not None:
            check_text(ds, col, what, source)
    if label is not None:
        check_labels(ds, label, source, flag)


def check_text(ds, col: str, what: str, source: str, offset: int = 0) -> None:
    """``offset``: rows before ``ds`` in its source (streamed batches)."""
    import pyarrow.compute as pc

    arr = _column(ds, col)
    if arr.null_count:  # null counts are Arrow metadata: a clean column costs nothing here
        _no_text(_first_where(arr, pc.is_null) + 1 + offset, what, col, source)
    if _is_text_type(arr.type):
        return
    for start, chunk in _chunks(arr):
        values = chunk.to_pylist()
        if "json" in str(arr.type):  # `datasets` keeps a column of mixed JSON types as encoded JSON
            values = [None if v is None else json.loads(v) for v in values]
        row = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if row is None:
            continue
        if values[row] is None:
            _no_text(start + row + 1 + offset, what, col, source)
        raise EebertError(f"{source}: row {start + row + 1 + offset} has {type(values[row]).__name__} "
                          f"{values[row]!r} in {what} column {col!r}, not a string",
                          f"quote the {what} values so that every row holds text")
    if not len(arr):
        raise EebertError(f"{source}: the {what} column {col!r} has type {arr.type}, not text",
                          f"quote the {what} values so that every row holds text")


def _no_text(row: int, what: str, col: str, source: str):
    raise EebertError(f"{source}: row {row} has no {what} (null or missing {col!r})",
                      "fill in or drop the rows without text; eebert does not guess them")


def check_labels(ds, col: str, source: str, flag: str | None = "--label-column") -> None:
    """Labels present in every row; ``flag``: the flag that named the column (None: the default column)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _column(ds, col)
    hint = (f"fill them in, or drop {flag} to use the deployed model's predictions" if flag
            else f"fill them in; data without a {col!r} column is unlabelled (the deployed model's predictions "
                 "are then the targets)")  # the default column was never named: there is no flag to drop
    if arr.null_count:
        raise EebertError(f"{source} has empty or NaN values in label column {col!r} "
                          f"(row {_first_where(arr, pc.is_null) + 1})", hint)
    if pa.types.is_floating(arr.type):
        nan = _first_where(arr, pc.is_nan)
        if nan is not None:
            raise EebertError(f"{source} has NaN in label column {col!r} (row {nan + 1})", hint)
    if _is_text_type(arr.type):
        empty = _first_where(arr, lambda c: pc.equal(pc.utf8_trim_whitespace(c), ""))
        if empty is not None:
            raise EebertError(f"{source} has empty values in label column {col!r} (row {empty + 1})", hint)
