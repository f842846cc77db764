"""Row checks on the columns eebert reads, run once per source before any long work.

Each failure is one :class:`EebertError` naming the source, the row and the column: a null
or missing text (a JSON ``null`` must not become the string "None"), text that is not a
string, an empty or NaN label. Checks run on Arrow columns, so they cost little on large data.
"""

from __future__ import annotations

import json

from ..errors import EebertError


def _column(ds, col: str):
    import pyarrow as pa

    arr = ds.data.column(col)  # sources are checked before any select(), so rows are in file order
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _first(mask) -> int:
    import pyarrow.compute as pc

    return int(pc.index(mask, True).as_py())


def _is_text_type(t) -> bool:
    import pyarrow as pa

    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def check_columns(ds, text: str, pair: str | None, label: str | None, source: str, flag: str = "--label-column") -> None:
    """Raise on the first bad row of ``ds`` (a `datasets.Dataset` or a pyarrow Table) in these columns."""
    for col, what in ((text, "text"), (pair, "pair")):
        if col is not None:
            check_text(ds, col, what, source)
    if label is not None:
        check_labels(ds, label, source, flag)


def check_text(ds, col: str, what: str, source: str, offset: int = 0) -> None:
    """``offset``: rows before ``ds`` in its source (streamed batches)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _column(ds, col) if not isinstance(ds, pa.Table) else ds.column(col).combine_chunks()
    if arr.null_count:
        _no_text(_first(pc.is_null(arr)) + 1 + offset, what, col, source)
    if _is_text_type(arr.type):
        return
    values = arr.to_pylist()
    if "json" in str(arr.type):  # `datasets` keeps a column of mixed JSON types as encoded JSON
        values = [None if v is None else json.loads(v) for v in values]
    row = next((i for i, v in enumerate(values) if not isinstance(v, str)), 0)
    if values and values[row] is None:
        _no_text(row + 1 + offset, what, col, source)
    kind = type(values[row]).__name__ if values else str(arr.type)
    raise EebertError(f"{source}: row {row + 1 + offset} has {kind} {values[row] if values else ''!r} in {what} "
                      f"column {col!r}, not a string", f"quote the {what} values so that every row holds text")


def _no_text(row: int, what: str, col: str, source: str):
    raise EebertError(f"{source}: row {row} has no {what} (null or missing {col!r})",
                      "fill in or drop the rows without text; eebert does not guess them")


def check_labels(ds, col: str, source: str, flag: str = "--label-column") -> None:
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = _column(ds, col)
    hint = f"fill them in, or drop {flag} to use the deployed model's predictions"
    if arr.null_count:
        raise EebertError(f"{source} has empty or NaN values in label column {col!r} (row {_first(pc.is_null(arr)) + 1})",
                          hint)
    if pa.types.is_floating(arr.type):
        nan = pc.is_nan(arr)
        if pc.any(nan).as_py():
            raise EebertError(f"{source} has NaN in label column {col!r} (row {_first(nan) + 1})", hint)
    if _is_text_type(arr.type):
        empty = pc.equal(pc.utf8_trim_whitespace(arr), "")
        if pc.any(empty).as_py():
            raise EebertError(f"{source} has empty values in label column {col!r} (row {_first(empty) + 1})", hint)
