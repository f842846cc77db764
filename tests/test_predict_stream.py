"""`eebert predict --input FILE --output OUT`: streamed in chunks, input order kept, OUT complete or absent."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from eebert_cli.scoring.config import CalibrationConfig
from eebert_cli.cli import app
from eebert_cli.train.config import AttachConfig
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError
from eebert_cli.train.attach import attach
from eebert_cli.steps import calibrate
from eebert_cli.model.artifact import load_artifact
from eebert_cli.deploy.predict_file import predict_to_file
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.train.config import TrainConfig

from conftest import make_rows


@pytest.fixture(scope="module")
def model(tiny_ckpt, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("stream") / "art"
    dcfg = DataConfig(spec=str(tiny_data))
    attach(str(tiny_ckpt), dcfg, AttachConfig(train=TrainConfig(epochs=2)), out)
    calibrate(load_artifact(out), load_data(dcfg), CalibrationConfig(target_speedup=1.5))
    return EarlyExitModel.from_artifact(out)


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def rows():
    return make_rows(23, seed=3)


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_every_output_format_matches_in_memory_predict_row_for_row(model, tmp_path, rows, suffix):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / f"out.{suffix}"
    summary = predict_to_file(model, src, out, batch_size=4, chunk_rows=5)  # 5 chunks, the last one short
    assert summary["rows"] == len(rows)
    if suffix == "jsonl":
        got = [json.loads(l) for l in out.read_text().splitlines()]
    elif suffix == "csv":
        import csv

        got = [{**r, "row": int(r["row"]), "exit_layer": int(r["exit_layer"]), "probs": json.loads(r["probs"])}
               for r in csv.DictReader(out.open())]
    else:
        got = pq.read_table(out).to_pylist()
    want = model.predict([r["text"] for r in rows], batch_size=4)
    assert [g["row"] for g in got] == list(range(len(rows)))
    assert [g["label"] for g in got] == [p.label for p in want]
    assert [g["exit_layer"] for g in got] == [p.exit_layer for p in want]
    assert all(g["probs"] == pytest.approx(p.probs, abs=1e-6) for g, p in zip(got, want))
    assert not list(tmp_path.glob(".out.*"))  # no temp file left


def test_a_bad_row_half_way_leaves_no_output_and_no_temp_file(model, tmp_path, rows):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"text": null}\n')
    out = tmp_path / "out.parquet"
    with pytest.raises(EebertError, match=f"row {len(rows) + 1} has no text"):
        predict_to_file(model, src, out, chunk_rows=5)
    assert list(tmp_path.iterdir()) == [src]


def test_an_interruption_leaves_the_previous_output_intact(model, tmp_path, rows, monkeypatch):
    src = tmp_path / "in.csv"
    import pyarrow.csv as pacsv

    pacsv.write_csv(pa.Table.from_pylist(rows), src)
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")
    calls = {"n": 0}
    real = model.predict

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(model, "predict", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(model, src, out, chunk_rows=5)
    assert out.read_text() == "previous\n" and sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.jsonl"]


@pytest.mark.parametrize("output", [False, True])
def test_a_column_the_file_lacks_is_refused_before_the_model_loads(model, tmp_path, rows, monkeypatch, output):
    """Printed or streamed to --output: the file's first rows name its columns before any model is loaded."""
    import eebert_cli.deploy.predict_file as predict_file

    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(predict_file, "load_predictor", lambda *a, **k: pytest.fail("the model loaded first"))
    args = ["--output", tmp_path / "out.jsonl"] if output else []
    for flag, needle in (("--text-column", "no text column 'review' (columns: label, text)"),
                         ("--pair-column", "no pair column 'review'")):
        r = run("predict", model.artifact.path, "--input", src, *args, flag, "review")
        assert r.exit_code == 1 and needle in r.output and "Traceback" not in r.output, r.output
    assert not (tmp_path / "out.jsonl").exists()


def test_cli_streams_to_a_file_and_guards_the_paths(model, tmp_path, rows):
    art = model.artifact.path
    src = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    out = tmp_path / "sub" / "preds.jsonl"
    r = run("predict", art, "--input", src, "--output", out, "--batch-size", 8, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rows"] == len(rows) == len(out.read_text().splitlines())
    r = run("predict", art, "--input", src, "--output", out)
    assert r.exit_code == 1 and "already exists" in r.output and "--overwrite" in r.output
    assert run("predict", art, "--input", src, "--output", out, "--overwrite").exit_code == 0
    r = run("predict", art, "--input", src, "--output", tmp_path / "p.txt")
    assert r.exit_code == 1 and "unknown output type" in r.output
    r = run("predict", art, "--input", src, "--output", src, "--overwrite")
    assert r.exit_code == 1 and "is the input file" in r.output
    r = run("predict", art, "--input", src, "--output", tmp_path / "x.csv", "--text-column", "review")
    assert r.exit_code == 1 and "no text column 'review'" in r.output and not (tmp_path / "x.csv").exists()
    r = run("predict", art, "--input", src, "--batch-size", 0)
    assert r.exit_code == 1 and "--batch-size" in r.output


@pytest.mark.parametrize("output", [False, True])
def test_a_bad_row_at_the_end_is_refused_before_the_model_loads(model, tmp_path, rows, monkeypatch, output):
    """Every row is checked in a pass before the model loads: a bad row past the CSV reader's first chunk
    (10,000 rows) failed only after every row before it was predicted."""
    import eebert_cli.deploy.predict_file as predict_file

    src = tmp_path / "in.csv"
    n = 10_050
    src.write_text("text,label\n" + "".join(f"review {i},{i % 2}\n" for i in range(n)) + "I loved it, really,1\n")
    monkeypatch.setattr(predict_file, "load_predictor", lambda *a, **k: pytest.fail("the model loaded first"))
    args = ["--output", tmp_path / "out.jsonl"] if output else []
    r = run("predict", model.artifact.path, "--input", src, *args)
    assert r.exit_code == 1 and f"in.csv:{n + 2} has 3 fields" in r.output, r.output
    assert not (tmp_path / "out.jsonl").exists()
