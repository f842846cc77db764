import json

import pytest

from eebert_cli.data import DataConfig, load_data, map_labels
from eebert_cli.core.errors import EebertError

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


# --- sources through `datasets`: save_to_disk, split maps, parquet/TSV ---------------------------------

def test_a_save_to_disk_dataset_dict_reads_with_a_split_map(tmp_path):
    import datasets

    rows = make_rows(50)
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(rows[:30]),
                               "heldout": datasets.Dataset.from_list(rows[30:40]),
                               "test": datasets.Dataset.from_list(rows[40:])})
    dd.save_to_disk(str(tmp_path / "dd"))
    d = load_data(DataConfig(spec=str(tmp_path / "dd"), split_map={"validation": "heldout"}))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 30, "validation": 10, "test": 10}
    assert d.split("test").texts == [r["text"] for r in rows[40:]]
    with pytest.raises(EebertError) as e:
        load_data(DataConfig(spec=str(tmp_path / "dd"), split_map={"validation": "dev"}))
    assert "no split 'dev'" in e.value.message and "heldout" in e.value.message
    with pytest.raises(EebertError, match="no validation split"):
        load_data(DataConfig(spec=str(tmp_path / "dd"))).split("validation")


def test_a_single_saved_dataset_gets_the_seeded_split_of_a_file(tmp_path):
    import datasets

    rows = make_rows(100)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "one"))
    saved = load_data(DataConfig(spec=str(tmp_path / "one")))
    csv_ = load_data(DataConfig(spec=str(write_csv(tmp_path / "all.csv", rows))))
    assert {k: v.texts for k, v in saved.splits.items()} == {k: v.texts for k, v in csv_.splits.items()}


def test_parquet_tsv_and_jsonl_read_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = make_rows(40)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    (tmp_path / "d.tsv").write_text("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows))
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = [load_data(DataConfig(spec=str(tmp_path / f"d.{x}"))).split("train") for x in ("parquet", "tsv", "jsonl")]
    assert got[0].texts == got[1].texts == got[2].texts and got[0].labels == got[2].labels


@pytest.mark.parametrize("setting,flag", [({"text_column": "review"}, "--text-column"),
                                          ({"label_column": "stars"}, "--label-column"),
                                          ({"split_map": {"validation": "dev"}}, "--split-map"),
                                          ({"config": "plain"}, "--data-config")])
def test_a_built_in_corpus_refuses_settings_that_would_pick_other_columns_or_splits(setting, flag, monkeypatch):
    """Its columns and splits are fixed: such a setting was ignored (the corpus read as it is); refused before
    a row is read."""
    from eebert_cli.data import corpora, check_spec

    monkeypatch.setitem(corpora.CORPORA, "rotten-tomatoes", lambda: pytest.fail("the corpus was read"))
    with pytest.raises(EebertError, match=f"{flag} .* does not apply to the built-in corpus rotten-tomatoes"):
        check_spec(DataConfig(spec="rotten-tomatoes", **setting))
    check_spec(DataConfig(spec="rotten-tomatoes"))


def test_split_map_keys_must_be_eebert_splits(tmp_path):
    f = write_csv(tmp_path / "all.csv", make_rows(30))
    with pytest.raises(EebertError, match="not one of train, validation, test"):
        load_data(DataConfig(spec=str(f), split_map={"dev": "validation"}))


def test_tokenisation_is_a_batched_map_and_matches_the_tokenizer(tmp_path, tiny_ckpt):
    from transformers import AutoTokenizer

    from eebert_cli.model.features import encode

    tok = AutoTokenizer.from_pretrained(tiny_ckpt)
    split = load_data(DataConfig(spec=str(write_csv(tmp_path / "all.csv", make_rows(30))))).split("train")
    enc = encode(tok, split, 16)
    assert enc.input_ids == tok(split.texts, truncation=True, max_length=16)["input_ids"]


# --- bad rows: one line naming the file and the row, before any model work (issue 11) -----------------

BAD = [  # (file name, bytes, words the one-line message must hold)
    ("null.jsonl", b'{"text": "a", "label": 1}\n{"text": null, "label": 0}\n', ["null.jsonl", "row 2", "no text"]),
    ("missing.jsonl", b'{"text": "a", "label": 1}\n{"label": 0}\n', ["missing.jsonl", "row 2", "no text"]),
    ("number.jsonl", b'{"text": "a", "label": 1}\n{"text": 5, "label": 0}\n', ["row 2", "int", "not a string"]),
    ("scalar.jsonl", b'{"text": "a", "label": 1}\n42\n', ["scalar.jsonl:2", "not an object"]),
    ("broken.jsonl", b'{"text": "a", "label": 1}\n{"text": \n', ["broken.jsonl:2", "not valid JSON"]),
    ("latin1.csv", b"text,label\ngood,1\nd\xe9j\xe0 vu,0\n", ["latin1.csv:3", "not UTF-8"]),
    ("latin1.jsonl", b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 0}\n', ["latin1.jsonl:2", "UTF-8"]),
    ("nan.csv", b"text,label\ngood,0.5\nbad,NaN\n", ["nan.csv", "NaN", "row 2"]),
    ("nolabel.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": null}\n', ["empty or NaN values", "row 2"]),
    ("empty.csv", b"text,label\n", ["empty"]),
    ("comma.csv", b"text,label\ngood,1\nI loved it, really,1\n", ["comma.csv:3 has 3 fields where the header has 2"]),
]


def test_an_empty_label_names_a_fix_the_user_can_make(tmp_path):
    """The default label column was never named: its hint does not say to drop a flag that was not given."""
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"text": "a", "stars": 1, "label": 1}\n{"text": "b", "stars": null, "label": null}\n')
    with pytest.raises(EebertError) as e:
        load_data(DataConfig(spec=str(f)))
    assert "--label-column" not in e.value.hint and "without a 'label' column is unlabelled" in e.value.hint
    with pytest.raises(EebertError) as e:
        load_data(DataConfig(spec=str(f), label_column="stars"))
    assert "drop --label-column" in e.value.hint


@pytest.mark.parametrize("name,content,needles", BAD, ids=[b[0] for b in BAD])
def test_bad_rows_are_one_line_errors(tmp_path, name, content, needles):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(EebertError) as e:
        load_data(DataConfig(spec=str(f)))
    assert e.value.hint
    for n in needles:
        assert n in e.value.message, e.value.message


def test_a_bom_is_stripped_from_the_header(tmp_path):
    f = tmp_path / "bom.csv"
    f.write_bytes(b"\xef\xbb\xbftext,label\n" + b"".join(f"{r['text']},{r['label']}\n".encode() for r in make_rows(20)))
    d = load_data(DataConfig(spec=str(f)))
    assert d.split("train").labels is not None and "\ufeff" not in d.split("train").texts[0]
    j = tmp_path / "bom.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(r).encode() + b"\n" for r in make_rows(20)))
    assert load_data(DataConfig(spec=str(j))).split("train").labels is not None


def test_a_jsonl_null_never_becomes_the_string_none(tmp_path):
    f = tmp_path / "n.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in make_rows(20)) + '{"text": null, "label": "positive"}\n')
    with pytest.raises(EebertError, match="row 21 has no text"):
        load_data(DataConfig(spec=str(f)))


def test_a_csv_text_column_of_numbers_is_read_as_the_text_written(tmp_path):
    """pandas reads a column of numbers as numbers, quoted or not: "007" became int 7 and the file was refused
    ("quote the text values", which it already was). The text columns are read as written; a file whose
    first 10,000 texts are numbers and later ones words (the CSV reader's chunks) reads whole, and an empty
    text field is still missing, not the text ""."""
    from eebert_cli.deploy.predict_file import chunks

    f = tmp_path / "codes.csv"
    f.write_text("text,pair,label\n" + "".join(f'"{i:03d}",{i}.50,{i % 2}\n' for i in range(10_001))
                 + '"a real sentence",words,1\n')
    d = load_data(DataConfig(spec=str(f), pair_column="pair", seed=0))
    pairs = {t: p for s in ("train", "validation", "test") for t, p in zip(d.split(s).texts, d.split(s).pairs)}
    assert len(pairs) == 10_002 and pairs["007"] == "7.50" and pairs["a real sentence"] == "words"
    streamed = [t for _, ts, _ in chunks(f, "text", "pair") for t in ts]
    assert streamed[:3] == ["000", "001", "002"] and streamed[-1] == "a real sentence"
    f.write_text('text,label\n"007",1\n,0\n')
    with pytest.raises(EebertError, match="row 2 has no text"):
        load_data(DataConfig(spec=str(f)))


def test_a_tsv_written_without_quoting_keeps_every_row(tmp_path):
    """TSV has no quoting (GLUE's files): read with CSV quoting, a text that opened with a double quote ran
    on over the rows after it up to the next quote, merging them into one text without a word. A TSV written
    with CSV quoting (pandas' to_csv) still reads its quoted tabs, line breaks and doubled quotes."""
    import pandas as pd

    from eebert_cli.deploy.predict_file import chunks

    raw = tmp_path / "raw.tsv"
    raw.write_text('text\tlabel\tsplit\n"Hi" she said, and left\t1\ttrain\n"an opening quote\t0\ttrain\n'
                   'plain text\t0\ttrain\nsays "hi" here\t1\ttrain\n"whole"\t0\tvalidation\nlast\t1\ttest\n')
    d = load_data(DataConfig(spec=str(raw)))
    assert d.split("train").texts == ['"Hi" she said, and left', '"an opening quote', "plain text", 'says "hi" here']
    assert d.split("validation").texts == ['"whole"'] and d.split("test").texts == ["last"]
    assert [t for _, ts, _ in chunks(raw, "text", None) for t in ts][1:3] == ['"an opening quote', "plain text"]

    quoted = tmp_path / "quoted.tsv"
    pd.DataFrame({"text": ['says "hi"', "a\ttab", "a line\nbreak", "plain"], "label": [0, 1, 0, 1],
                  "split": ["train", "train", "validation", "test"]}).to_csv(quoted, sep="\t", index=False)
    d = load_data(DataConfig(spec=str(quoted)))
    assert d.split("train").texts == ['says "hi"', "a\ttab"] and d.split("validation").texts == ["a line\nbreak"]


def test_a_csv_text_that_reads_none_or_na_is_text(tmp_path):
    """pandas reads "None", "N/A", "null", "nan" as missing: a survey's free answers were refused as rows with
    no text. In the text and pair columns only an empty cell is missing; in a label column pandas' list holds."""
    from eebert_cli.deploy.predict_file import chunks

    f = tmp_path / "answers.csv"
    f.write_text("text,label,split\nNone,1,train\nN/A,0,train\nnull,1,validation\nnan,0,test\n")
    d = load_data(DataConfig(spec=str(f)))
    assert d.split("train").texts == ["None", "N/A"] and d.split("validation").texts == ["null"]
    assert [t for _, ts, _ in chunks(f, "text", None) for t in ts] == ["None", "N/A", "null", "nan"]
    f.write_text("text,label,split\nNone,1,train\n,0,train\n")
    with pytest.raises(EebertError, match="row 2 has no text"):
        load_data(DataConfig(spec=str(f)))
    f.write_text("text,label,split\nNone,1,train\nfine,NA,train\n")
    with pytest.raises(EebertError, match="empty or NaN values in label column 'label' \\(row 2\\)"):
        load_data(DataConfig(spec=str(f)))


def test_a_file_separated_otherwise_says_so(tmp_path):
    """A spreadsheet's CSV export separated by semicolons reads as one column named `text;label`: the line says
    how the file is separated, not only that `text` is missing; predict --input says the same."""
    from eebert_cli.deploy.predict_file import check_rows

    f = tmp_path / "export.csv"
    f.write_text("text;label\n" + "".join(f"review {i};{i % 2}\n" for i in range(20)))
    for call in (lambda: load_data(DataConfig(spec=str(f))), lambda: check_rows(f, "text", None)):
        with pytest.raises(EebertError, match="its header is one column, 'text;label', separated by semicolons") as e:
            call()
        assert "separated by commas" in e.value.hint
    f.write_text("body,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(20)))
    with pytest.raises(EebertError, match=r"has no text column 'text' \(columns: body, label\)") as e:
        load_data(DataConfig(spec=str(f)))
    assert e.value.hint == "name the right column with --text-column"


def test_classlabel_ids_are_read_by_their_names_where_the_model_knows_them(tmp_path, tiny_ckpt):
    """A `datasets` set numbers its labels by its ClassLabel, in its own order; a model may number them
    otherwise (conll2003's tags and a hub NER model's are so). Where the model knows every name, the ids are
    read by name: they named the wrong labels, silently. Names the model does not know leave ids as ids."""
    from types import SimpleNamespace

    import datasets
    from transformers import AutoConfig, AutoTokenizer

    from conftest import TAGS, make_tag_rows, make_tagger
    from eebert_cli.model.checkpoint import gold_labels
    from eebert_cli.model.token_features import words_of

    def saved(name, features, rows):
        ds = datasets.Dataset.from_list(rows, features=datasets.Features(features))
        datasets.DatasetDict({s: ds for s in ("train", "validation", "test")}).save_to_disk(tmp_path / name)
        return load_data(DataConfig(spec=str(tmp_path / name)))

    config = AutoConfig.from_pretrained(tiny_ckpt)  # id2label {0: LABEL_0, 1: LABEL_1}
    names = [config.id2label[1], config.id2label[0]]  # the data's order is the model's reversed
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(10)]
    for labels, expected in ((names, [1 - r["label"] for r in rows]), (["neg", "pos"], [r["label"] for r in rows])):
        d = saved("c-" + labels[0], {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=labels)}, rows)
        deployed = SimpleNamespace(model=SimpleNamespace(config=config), label2id=config.label2id,
                                   id2label=config.id2label)
        assert gold_labels(deployed, d, "test").tolist() == expected

    tagger = make_tagger(tmp_path / "tagger")
    order = list(reversed(TAGS))  # the data numbers the model's tags backwards
    tag_rows = [{"tokens": r["tokens"], "ner_tags": [order.index(t) for t in r["ner_tags"]]} for r in make_tag_rows(6)]
    d = saved("t", {"tokens": datasets.Sequence(datasets.Value("string")),
                    "ner_tags": datasets.Sequence(datasets.ClassLabel(names=order))}, tag_rows)
    label2id = {t: i for i, t in enumerate(TAGS)}
    w = words_of(AutoTokenizer.from_pretrained(tagger), d.split("test"), 32, label2id, len(TAGS))
    assert w.tags == [[label2id[t] for t in r["ner_tags"]] for r in make_tag_rows(6)]
