"""Property tests over the data readers: any rows, any bytes, any encoding -> data or one EebertError.

Never a traceback: a file either loads into splits whose texts are strings, or fails with an
EebertError carrying a hint (what the CLI prints as one line).
"""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

values = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.integers(), max_size=2))
rows = st.lists(st.dictionaries(st.sampled_from(["text", "label", "split", "x"]), values, max_size=4),
                min_size=0, max_size=12)


def _load(path):
    try:
        d = load_data(DataConfig(spec=str(path)))
    except EebertError as e:
        assert e.message and e.hint
        return None
    for split in d.splits.values():
        assert all(isinstance(t, str) for t in split.texts)  # never "None", never a number
    return d


@SETTINGS
@given(rows=rows)
def test_random_jsonl_rows_load_or_fail_with_an_eebert_error(tmp_path_factory, rows):
    f = tmp_path_factory.mktemp("fz") / "d.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = _load(f)
    if d is not None:
        assert all(isinstance(r.get("text"), str) for r in rows)


@SETTINGS
@given(raw=st.binary(max_size=200), suffix=st.sampled_from(["csv", "tsv", "jsonl", "json"]))
def test_random_bytes_load_or_fail_with_an_eebert_error(tmp_path_factory, raw, suffix):
    f = tmp_path_factory.mktemp("fz") / f"d.{suffix}"
    f.write_bytes(raw)
    _load(f)


@SETTINGS
@given(texts=st.lists(st.text(min_size=1, max_size=10).filter(lambda t: "\n" not in t and "\r" not in t),
                      min_size=1, max_size=10),
       encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
def test_csv_in_any_encoding_loads_or_names_the_file(tmp_path_factory, texts, encoding):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["text", "label"])
    w.writerows([t, i % 2] for i, t in enumerate(texts))
    f = tmp_path_factory.mktemp("fz") / "d.csv"
    try:
        f.write_bytes(buf.getvalue().encode(encoding))
    except UnicodeEncodeError:
        return
    try:
        load_data(DataConfig(spec=str(f)))
    except EebertError as e:
        assert str(f) in e.message and e.hint
