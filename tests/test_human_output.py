"""Every command's human output (no --json: tables and lines) on every task, through the CLI.

Most tests read `--json`; the printed path once read fields a tagger's record lacked and crashed after
its work was written. Here each task's tiny artifact goes through attach, calibrate (both budgets),
benchmark (batch 1 and batched, PyTorch and ONNX Runtime), predict (texts, a file, a file to a file)
and export, printing as a user sees it: each must exit 0 and print no traceback.
"""

import random

import pytest
from typer.testing import CliRunner

from conftest import make_bert, make_model, make_multilabel_case, make_rows, make_tagging_case, write_csv
from eebert_cli.cli import app


def _sentences(root, ckpt, label):
    rows = [{"text": r["text"], "label": label(r)} for r in make_rows(300, seed=1)]
    data = root / "data"
    data.mkdir(parents=True)
    for name, part in (("train", rows[:180]), ("validation", rows[180:240]), ("test", rows[240:])):
        write_csv(data / f"{name}.csv", part)
    return ckpt, data


def _classification(root):
    return _sentences(root, make_bert(root / "model"), lambda r: r["label"])


def _regression(root):
    rng = random.Random(0)
    return _sentences(root, make_model(root / "model", "bert", num_labels=1), lambda r: round(rng.gauss(0, 1), 3))


CASES = {"classification": _classification, "regression": _regression, "multi-label": make_multilabel_case,
         "token-classification": make_tagging_case}


@pytest.mark.parametrize("task", list(CASES))
def test_every_command_prints_its_result_on_every_task(task, tmp_path):
    pytest.importorskip("onnxruntime")
    ckpt, data = CASES[task](tmp_path / "case")
    art, texts = tmp_path / "art", tmp_path / "in.jsonl"
    texts.write_text('{"text": "good film great"}\n{"text": "bad dull"}\n')
    commands = [
        ["attach", ckpt, "--data", data, "--out", art, "--epochs", 3],
        ["calibrate", art, "--max-drop", 5], ["calibrate", art, "--target-speedup", 1.3],
        ["benchmark", art, "--repeats", 1, "--timing-samples", 5],
        ["benchmark", art, "--repeats", 1, "--timing-samples", 8, "--batch-size", 4],
        ["predict", art, "good film great", "bad dull"], ["predict", art, "--input", texts],
        ["predict", art, "--input", texts, "--output", tmp_path / "out.csv"],
        ["export", art], ["benchmark", art, "--runtime", "onnxruntime", "--repeats", 1, "--timing-samples", 5],
    ]
    for c in commands:
        r = CliRunner().invoke(app, [str(x) for x in c])
        assert r.exit_code == 0 and "Traceback" not in r.output and "error:" not in r.output, (c, r.output)
        assert r.output.strip(), c  # it printed something


@pytest.mark.parametrize("flags,line", [(["--bypass", "badge"], "bypasses: 2 blocks, "),
                                        (["--gates", "smartbert"], "gates: 3 gated layers, held-out skip rate "),
                                        (["--exits", "leco"], "LECO search chose: layer 1: "),
                                        (["--objective", "leebert"], "learned loss weights: ce@1 ")])
def test_attach_prints_what_its_components_chose(tiny_ckpt, tiny_data, tmp_path, flags, line):
    """The lines attach adds for bypasses, gates, LECO's search and LeeBERT's learned weights."""
    r = CliRunner().invoke(app, ["attach", str(tiny_ckpt), "--data", str(tiny_data), "--out", str(tmp_path / "a"),
                                 "--epochs", "1", *flags])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert line in " ".join(r.output.split()), r.output  # rich wraps long lines
