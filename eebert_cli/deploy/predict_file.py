"""`eebert predict --input FILE [--output OUT]`: a file of any size, streamed in chunks.

Rows are read in chunks through `datasets` streaming (data/files.py), checked
(data/rows.py), classified and written, so memory stays flat however large the file.
Output rows keep input order: ``row`` (0-based input row), ``label``, ``exit_layer``,
``probs``; a tagger's rows (``model/tagger_runtime.py``): ``row``, ``exit_layer``, ``entities``
(spans with character offsets into the row's text) and ``tokens`` (each word's tag). OUT is
written to a temp sibling and renamed into place only when complete: an interrupted run
leaves no half-written OUT, and an existing OUT is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Iterator

from ..data.files import READERS, builder_of, count_rows, stream_file
from ..data.spec import missing_column
from ..data.rows import check_text
from ..core.atomic import check_writable
from ..core.errors import EebertError
from ..model.calibration import calibrated_token_threshold
from ..model.runtime import prediction_row
from ..model.tagger_runtime import Tagger, tagger_task
from ..core.ui import SILENT, UI

#: rows read, classified and written at a time: the memory bound
CHUNK_ROWS = 4096


def check_paths(input_file: Path, output: Path | None, overwrite: bool) -> None:
    """Every path problem fails here, before the model loads (the rows: ``check_rows``)."""
    if not input_file.is_file():
        what = "is a folder, not a file" if input_file.is_dir() else "not found"
        raise EebertError(f"input file {input_file} {what}", f"give a data file ({', '.join(READERS)})")
    builder_of(input_file)  # an unknown file type fails now
    check_not_empty(input_file)
    if output is None:
        return
    if output.suffix.lower() not in WRITERS:
        raise EebertError(f"cannot write {output}: unknown output type {output.suffix!r}",
                          f"name it with one of {', '.join(WRITERS)}")
    if output.exists() and output.resolve() == input_file.resolve():
        raise EebertError(f"--output {output} is the input file", "write the predictions to another file")
    if output.is_dir():
        raise EebertError(f"--output {output} is a directory", "name a file, e.g. predictions.jsonl")
    if output.exists() and not overwrite:
        raise EebertError(f"--output {output} already exists", "pass --overwrite to replace it, or name a new file")
    check_writable(output.parent, f"--output {output}")


def check_rows(input_file: Path, text_column: str, pair_column: str | None, ui: UI = SILENT) -> None:
    """Every row of ``input_file`` read and checked once before the model loads (its columns, its texts): a
    pass with no model (about
    6 s per million CSV rows on a 2-core machine), so that a bad row near the end of a long file fails now, not
    after the rows before it were predicted (and their output thrown away)."""
    with ui.progress(f"check {input_file.name}", count_rows(input_file), unit="rows") as advance:
        for _, texts, _ in chunks(input_file, text_column, pair_column):
            advance(len(texts))


def check_not_empty(input_file: Path) -> None:
    """`datasets`' JSON stream ends in a bare StopIteration on an empty file, its CSV reader in a pandas error."""
    if input_file.stat().st_size == 0:
        raise EebertError(f"input file {input_file} is empty (0 bytes)", "give a file with a header and rows to predict")
    if input_file.suffix.lower() == ".parquet" and count_rows(input_file) == 0:  # its stream fails on a batch of 0
        raise EebertError(f"input file {input_file} has no rows", "give a file with rows to predict")


def chunks(input_file: Path, text_column: str, pair_column: str | None,
           chunk_rows: int = CHUNK_ROWS) -> Iterator[tuple[int, list[str], list[str] | None]]:
    """(first row number, texts, pairs) per chunk of the file, rows checked as they come."""
    import pyarrow as pa

    start = 0
    check_not_empty(input_file)
    for batch in stream_file(input_file, chunk_rows, (text_column, pair_column)):
        check_named_columns(batch, input_file, text_column, pair_column)
        for col, what in ((text_column, "text"), (pair_column, "pair")):
            if col is not None:
                check_text(pa.table({col: _arrow(batch[col])}), col, what, str(input_file), offset=start)
        texts = batch[text_column]
        yield start, texts, batch[pair_column] if pair_column else None
        start += len(texts)
    if start == 0:
        raise EebertError(f"input file {input_file} has no rows (a header at most)", "give a file with rows to predict")


def check_named_columns(batch: dict, input_file: Path, text_column: str, pair_column: str | None) -> None:
    for col, what in ((text_column, "text"), (pair_column, "pair")):
        if col is not None and col not in batch:
            raise missing_column(str(input_file), what, col, batch)


def _arrow(values: list):
    import pyarrow as pa

    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types: keep them as Python objects to report
        return pa.array([json.dumps(v) if v is not None else None for v in values], type=pa.json_())


def load_predictor(artifact: str | Path, backbone: str | None, device, pair_column: str | None = None,
                   token_threshold: float | None = None, token_exit: bool = False):
    """What answers an artifact's rows: its tagger for a tagger's artifact (``token_threshold``: the
    per-token exit, ``model/token_halt.py``; ``token_exit`` alone: at the threshold
    ``calibrate --token-exit`` chose), else its early-exit model."""
    from ..model.artifact import load_artifact
    from ..model.device import place_artifact, resolve
    from ..model.runtime import EarlyExitModel

    rule = "token-maxprob"  # what decides when a word halts (criteria/token.py)
    if token_exit and token_threshold is None:
        check_token_exit(artifact, device, "--token-exit")
        token_threshold, rule = calibrated_token_threshold(artifact)
    if token_threshold is not None:
        check_token_threshold(artifact, token_threshold, device)
    if tagger_task(artifact) is None:  # predictions compare with nothing: no fp32 copy beside an int8 backbone
        return EarlyExitModel.from_artifact(artifact, backbone, device, keep="backbone")
    check_tagger_columns(pair_column)
    if token_threshold is not None:
        from ..model.token_halt import TokenHaltTagger

        tagger = TokenHaltTagger(load_artifact(artifact, backbone), token_threshold, rule)
    else:
        tagger = Tagger.from_artifact(artifact, backbone)
    place_artifact(tagger.artifact, resolve(device))
    return tagger


def check_tagger_columns(pair_column: str | None) -> None:
    """A tagger reads one text per row: a pair column is refused before anything loads."""
    if pair_column:
        raise EebertError(f"a tagger tags one text per row; --pair-column {pair_column} is for sentence-pair "
                          "classifiers", "drop --pair-column")


def check_token_exit(artifact: str | Path, device, flag: str) -> None:
    """The per-token exit's settings, before anything loads: a tagger's artifact, the CPU."""
    from ..model.device import resolve

    if tagger_task(artifact) is None:
        raise EebertError(f"{flag} is the per-token exit of taggers; this artifact classifies sentences",
                          f"drop {flag}")
    if resolve(device).device.type != "cpu":
        raise EebertError("the per-token exit runs on the CPU (one sentence at a time)", "pass --device cpu")


def check_token_threshold(artifact: str | Path, threshold: float, device) -> None:
    """``--token-threshold``: the per-token exit's settings and a probability."""
    check_token_exit(artifact, device, "--token-threshold")
    if not 0.0 <= threshold <= 1.0:
        raise EebertError(f"--token-threshold is a tag probability within [0, 1], got {threshold}",
                          "for example --token-threshold 0.95")


def answer_rows(model, start: int, texts: list[str], pairs: list[str] | None, batch_size: int,
                keep_text: bool = False) -> list[dict]:
    """Output rows for ``texts`` (rows ``start``...): a tagger's spans and tags, or a classifier's answers."""
    if isinstance(model, Tagger):
        return [{"row": start + i, **{k: v for k, v in r.items() if keep_text or k != "text"}}
                for i, r in enumerate(model.predict(texts, batch_size))]
    return rows_of(start, model.predict(texts, pairs, batch_size=batch_size), texts if keep_text else None)


def rows_of(start: int, preds, texts: list[str] | None = None) -> list[dict]:
    """Output rows; with ``texts``, each row carries its text too (for printing)."""
    return [{"row": start + i, **({"text": texts[i]} if texts is not None else {}), **prediction_row(p)}
            for i, p in enumerate(preds)]


def predict_rows(model, input_file: Path, text_column: str, pair_column: str | None, batch_size: int,
                 ui: UI = SILENT, chunk_rows: int = CHUNK_ROWS, keep_text: bool = False) -> Iterator[list[dict]]:
    """Prediction rows per chunk, in input order, with a progress bar counting rows/s."""
    with ui.progress(f"predict {input_file.name}", count_rows(input_file), unit="rows") as advance:
        for start, texts, pairs in chunks(input_file, text_column, pair_column, chunk_rows):
            rows = answer_rows(model, start, texts, pairs, batch_size, keep_text)
            advance(len(rows))
            yield rows


def predict_to_file(model, input_file: Path, output: Path, text_column: str = "text", pair_column: str | None = None,
                    batch_size: int = 32, ui: UI = SILENT, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Stream ``input_file`` through ``model`` into ``output`` (atomically); a summary dict."""
    t0, n = time.perf_counter(), 0
    labels = [model.artifact.deployed.id2label[i] for i in range(len(model.artifact.deployed.id2label))]
    with atomic_writer(output, labels, isinstance(model, Tagger)) as write:
        for rows in predict_rows(model, input_file, text_column, pair_column, batch_size, ui, chunk_rows):
            write(rows)
            n += len(rows)
    seconds = time.perf_counter() - t0
    return {"input": str(input_file), "output": str(output), "rows": n, "seconds": round(seconds, 3),
            "rows_per_second": round(n / seconds, 1) if seconds > 0 else None}


@contextlib.contextmanager
def atomic_writer(output: Path, labels: list[str], tags: bool = False) -> Iterator[Callable[[list[dict]], None]]:
    """Yields write(rows); OUT appears (by rename) only when the block completes. ``tags``: a tagger's rows."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    writer = WRITERS[output.suffix.lower()](tmp, labels, tags)
    try:
        yield writer.write
        writer.close()
        os.replace(tmp, output)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


class JsonlWriter:
    def __init__(self, path: Path, labels: list[str], tags: bool = False):
        self.f = path.open("w", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        self.f.write("".join(json.dumps(r) + "\n" for r in rows))

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()


#: a tagger's output columns (``predict_file.answer_rows``)
TAG_COLUMNS = ("row", "exit_layer", "entities", "tokens")


class CsvWriter(JsonlWriter):
    """``probs`` (a tagger's ``entities`` and ``tokens``) as JSON in one column: one layout for any number of labels."""

    def __init__(self, path: Path, labels: list[str], tags: bool = False):
        import csv

        super().__init__(path, labels)
        self.w = csv.writer(self.f)
        self.columns = TAG_COLUMNS if tags else ("row", "label", "exit_layer", "probs")
        self.w.writerow(self.columns)

    def write(self, rows: list[dict]) -> None:
        self.w.writerows([json.dumps(v) if isinstance(v, (list, dict)) else v for v in map(r.get, self.columns)]
                         for r in rows)


def tag_schema(row: bool = True):
    """A tagger's rows as parquet columns: spans and words as lists of structs (``row``: the input row's
    number, which the Ray executor leaves out since its parts keep input order)."""
    import pyarrow as pa

    span = pa.struct([("text", pa.string()), ("entity", pa.string()), ("start", pa.int64()),
                      ("end", pa.int64()), ("score", pa.float64())])
    word = pa.struct([("word", pa.string()), ("tag", pa.string()), ("start", pa.int64()),
                      ("end", pa.int64()), ("score", pa.float64())])
    return pa.schema(([("row", pa.int64())] if row else []) + [
        ("exit_layer", pa.int32()), ("entities", pa.list_(span)), ("tokens", pa.list_(word))])


class ParquetWriter:
    def __init__(self, path: Path, labels: list[str], tags: bool = False):
        import pyarrow as pa
        import pyarrow.parquet as pq

        if tags:
            self.schema = tag_schema()
        else:
            self.schema = pa.schema([("row", pa.int64()), ("label", pa.string()), ("exit_layer", pa.int32()),
                                     ("probs", pa.list_(pa.float32()))])
        self.w = pq.ParquetWriter(str(path), self.schema)

    def write(self, rows: list[dict]) -> None:
        import pyarrow as pa

        self.w.write_table(pa.Table.from_pylist(rows, schema=self.schema))

    def close(self) -> None:
        if self.w is not None:
            self.w.close()
            self.w = None


WRITERS = {".jsonl": JsonlWriter, ".csv": CsvWriter, ".parquet": ParquetWriter}
