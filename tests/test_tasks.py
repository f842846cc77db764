"""Metrics, regression end to end, macro-F1 in reports, and sentence pairs through predict."""

from __future__ import annotations

import json
import random

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_model, make_rows, write_csv
from eebert_cli.cli import app
from eebert_cli.criteria import build_criterion
from eebert_cli.core.errors import EebertError
from eebert_cli.tasks.metrics import macro_f1, mse, pearson, spearman
from eebert_cli.tasks import get, task_of


def test_macro_f1_weighs_every_class_equally():
    ref = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 2])
    pred = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 0, 0])  # always the majority class: 80% accuracy
    # F1 of class 0 = 2*8/(16+2) = 0.888..; classes 1 and 2: 0
    assert macro_f1(pred, ref) == pytest.approx((16 / 18) / 3)
    assert macro_f1(ref, ref) == 1.0


def test_regression_metrics():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert spearman(x, x ** 3) == pytest.approx(1.0)  # monotone, not linear
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 2.0])) == pytest.approx(1.0)  # ties
    assert mse(x, x + 1) == pytest.approx(1.0)


def test_metric_choice_follows_the_task():
    assert get("classification").choose_metric() == "accuracy" and get("regression").choose_metric() == "pearson"
    assert get("classification").choose_metric("macro-f1") == "macro-f1"
    with pytest.raises(EebertError):
        get("classification").choose_metric("pearson")


def test_patience_regression_scores_the_largest_recent_change():
    crit = build_criterion("patience-regression", {"patience": 2})
    outs = torch.tensor([[0.0, 1.0, 1.1, 1.15], [0.0, 0.0, 5.0, 5.0]])[..., None]  # [N, K, 1]
    s = crit.scores(outs)
    assert torch.isinf(s[:, :2]).all()  # fewer than two changes seen
    assert s[0, 2].item() == pytest.approx(1.0) and s[0, 3].item() == pytest.approx(0.1)
    assert s[1, 2].item() == pytest.approx(5.0) and s[1, 3].item() == pytest.approx(5.0)


@pytest.fixture(scope="module")
def regression_case(tmp_path_factory):
    """A tiny one-output model and STS-like pair data whose score follows the sentiment words."""
    root = tmp_path_factory.mktemp("regression")
    ckpt = make_model(root / "model", "bert", num_labels=1)
    rng = random.Random(0)
    pos, neg = {"good", "great", "fine", "love", "nice"}, {"bad", "awful", "poor", "hate", "dull"}
    rows = []
    for r in make_rows(300, seed=5):
        w = r["text"].split()
        score = sum(x in pos for x in w) - sum(x in neg for x in w) + rng.gauss(0, 0.1)
        half = max(1, len(w) // 2)
        rows.append({"text": " ".join(w[:half]), "text2": " ".join(w[half:]) or "the", "label": round(score, 3)})
    data = root / "data"
    data.mkdir()
    for name, part in (("train", rows[:180]), ("validation", rows[180:240]), ("test", rows[240:])):
        write_csv(data / f"{name}.csv", part)
    return ckpt, data


def test_regression_attach_calibrate_benchmark_predict(regression_case, tmp_path):
    ckpt, data = regression_case
    r = CliRunner()
    art = tmp_path / "art"
    res = r.invoke(app, ["attach", str(ckpt), "--out", str(art), "--data", str(data), "--pair-column", "text2",
                         "--epochs", "15", "--json"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((art / "eebert_config.json").read_text())
    assert cfg["task"] == "regression" and cfg["objective"]["name"] == "mse-distil"

    res = r.invoke(app, ["calibrate", str(art), "--target-speedup", "1.5", "--json"])
    assert res.exit_code == 0, res.output
    cal = json.loads(res.stdout)
    assert cal["criterion"] == "patience-regression" and cal["metric"] == "mse"
    assert cal["headline_metric"] == "pearson" and cal["validation"]["speedup_flops"] >= 1.5 - 1e-9
    v = cal["validation"]
    assert v["mse"] >= 0 and -1 <= v["metrics"]["pearson"] <= 1 and v["mse"] == pytest.approx(v["metrics"]["mse"])

    res = r.invoke(app, ["calibrate", str(art), "--max-drop", "10", "--json"])
    assert res.exit_code == 0, res.output
    v = json.loads(res.stdout)["validation"]
    assert v["mse"] <= 1.10 * v["deployed_mse"] + 1e-9  # --max-drop is a relative MSE budget for regression

    res = r.invoke(app, ["benchmark", str(art), "--timing-samples", "5", "--repeats", "1", "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["task"] == "regression" and rep["metric"] == "pearson"
    assert rep["timing"]["exit_mismatches"] == 0
    for row in ("deployed", "early_exit", "static_truncation", "oracle"):
        assert {"pearson", "spearman", "mse", "mse_to_deployed"} <= set(rep[row])
    assert rep["deployed"]["mse_to_deployed"] == 0.0
    assert "pearson" in (art / "report.md").read_text()

    (tmp_path / "in.jsonl").write_text('{"text": "good film", "text2": "great"}\n{"text": "bad", "text2": "dull"}\n')
    res = r.invoke(app, ["predict", str(art), "--input", str(tmp_path / "in.jsonl"), "--pair-column", "text2",
                         "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert all(isinstance(o["probs"][0], float) and float(o["label"]) == pytest.approx(o["probs"][0], abs=1e-4)
               for o in out)


def test_classification_criterion_on_a_regressor_is_refused(regression_case, tmp_path):
    ckpt, data = regression_case
    r = CliRunner()
    art = tmp_path / "art"
    assert r.invoke(app, ["attach", str(ckpt), "--out", str(art), "--data", str(data), "--epochs", "1"]).exit_code == 0
    res = r.invoke(app, ["calibrate", str(art), "--target-speedup", "1.5", "--criterion", "maxprob"])
    assert res.exit_code == 1 and "patience-regression" in res.output


def test_macro_f1_is_reported_for_every_row_and_the_chosen_point(tiny_ckpt, tiny_data, tmp_path):
    r = CliRunner()
    art = tmp_path / "art"
    assert r.invoke(app, ["attach", str(tiny_ckpt), "--out", str(art), "--data", str(tiny_data),
                          "--epochs", "3"]).exit_code == 0
    res = r.invoke(app, ["calibrate", str(art), "--target-speedup", "1.3", "--metric", "macro-f1", "--json"])
    assert res.exit_code == 0, res.output
    cal = json.loads(res.stdout)
    assert cal["headline_metric"] == "macro_f1"
    assert 0 <= cal["validation"]["metrics"]["macro_f1"] <= 1 and "deployed_macro_f1" in cal["validation"]["metrics"]
    res = r.invoke(app, ["benchmark", str(art), "--timing-samples", "0", "--repeats", "0", "--metric", "macro-f1",
                         "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["headline_metric"] == "macro_f1"
    for row in ("deployed", "early_exit", "static_truncation", "oracle"):
        assert 0 <= rep[row]["macro_f1"] <= 1
    assert "macro-F1" in (art / "report.md").read_text()
    # the deployed row is the shipped model's own macro-F1 on test (its forward here, not eebert's outputs)
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.features import encode
    from eebert_cli.model.runtime import pad_batch

    a, test = load_artifact(art), load_data(DataConfig(spec=str(tiny_data))).split("test")
    enc = encode(a.deployed.tokenizer, test, a.config["max_length"])
    ids, mask, types = pad_batch(enc.input_ids, enc.token_type_ids, enc.pad_id)
    with torch.no_grad():
        pred = a.deployed.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.argmax(-1)
    label_id = {str(k).lower(): v for k, v in a.deployed.model.config.label2id.items()}
    gold = torch.tensor([label_id[str(y).lower()] for y in test.labels])
    assert rep["deployed"]["macro_f1"] == pytest.approx(macro_f1(pred, gold), abs=1e-9)


def test_pairs_reach_the_model_as_segments(tmp_path):
    """With --pair-column the tokenizer's pair encoding (second segment, token type 1) is what runs."""
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.checkpoint import load_deployed
    from eebert_cli.model.features import encode

    ckpt = make_model(tmp_path / "m", "bert")
    write_csv(tmp_path / "d.csv", [{"text": "good", "text2": "bad film", "label": "positive"}] * 30)
    split = load_data(DataConfig(spec=str(tmp_path / "d.csv"), pair_column="text2")).split("train")
    enc = encode(load_deployed(ckpt).tokenizer, split, 32)
    assert enc.token_type_ids is not None and enc.token_type_ids[0] == [0, 0, 0, 1, 1, 1]
    with pytest.raises(EebertError):
        load_data(DataConfig(spec=str(tmp_path / "d.csv"), pair_column="missing"))


def test_task_of_reads_the_config():
    from transformers import BertConfig

    assert task_of(BertConfig(num_labels=1)).name == "regression"
    assert task_of(BertConfig(num_labels=3)).name == "classification"
