import json

import pytest

from eebert_cli.data import DataConfig, load_data, map_labels
from eebert_cli.errors import EebertError

from conftest import make_rows, write_csv


def test_a_single_file_gets_a_seeded_split(tmp_path):
    f = write_csv(tmp_path / "all.csv", make_rows(100))
    a, b = load_data(DataConfig(spec=str(f))), load_data(DataConfig(spec=str(f)))
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 80, "validation": 10, "test": 10}
    assert a.splits["test"].texts == b.splits["test"].texts


def test_a_split_column_is_honoured_and_jsonl_reads(tmp_path):
    rows = [dict(r, split=s) for r, s in zip(make_rows(6), ["train", "train", "dev", "valid", "test", "test"])]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows))
    d = load_data(DataConfig(spec=str(f)))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 2, "validation": 2, "test": 2}


def test_missing_default_label_column_means_unlabelled(tmp_path):
    f = write_csv(tmp_path / "u.csv", [{"text": r["text"]} for r in make_rows(30)])
    assert load_data(DataConfig(spec=str(f))).splits["train"].labels is None


def test_named_column_that_is_missing_is_an_error(tmp_path):
    f = write_csv(tmp_path / "x.csv", make_rows(30))
    with pytest.raises(EebertError) as e:
        load_data(DataConfig(spec=str(f), text_column="review"))
    assert "review" in e.value.message and "text" in e.value.message


def test_labels_map_by_name_or_id_and_unknown_ones_fail():
    l2i = {"negative": 0, "positive": 1}
    assert map_labels(["positive", "NEGATIVE", 1, "0"], l2i, 2) == [1, 0, 1, 0]
    with pytest.raises(EebertError) as e:
        map_labels(["positive", "meh"], l2i, 2)
    assert "meh" in e.value.message and "positive" in e.value.message


def test_max_samples_subsamples_each_split(tmp_path):
    f = write_csv(tmp_path / "all.csv", make_rows(200))
    d = load_data(DataConfig(spec=str(f), max_samples=15))
    assert all(len(v) == 15 for v in d.splits.values())
