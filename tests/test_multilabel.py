"""Multi-label checkpoints end to end: sigmoid exits, label-set targets, the label-margin criterion,
micro/macro-F1 in the report and label sets from predict."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import make_multilabel_case
from eebert_cli.cli import app
from eebert_cli.criteria import build_criterion
from eebert_cli.core.errors import EebertError
from eebert_cli.tasks.metrics import accuracy, macro_f1, micro_f1
from eebert_cli.tasks import get, task_of
from eebert_cli.tasks.multi_label import gold_multi_hot, label_set

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_label_set_metrics():
    ref = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    pred = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    assert accuracy(pred, ref) == 0.5  # exact label sets: rows 2 and 3
    # all decisions: tp 4, fp 1, fn 1 -> 8 / 10
    assert micro_f1(pred, ref) == pytest.approx(0.8)
    # per label: label 0 tp2 -> 1.0; label 1 tp2 -> 1.0; label 2 tp0 -> 0.0
    assert macro_f1(pred, ref) == pytest.approx(2 / 3)
    assert get("multi-label").choose_metric() == "micro-f1"
    with pytest.raises(EebertError):
        get("multi-label").choose_metric("pearson")


def test_label_sets_are_read_from_lists_and_strings():
    l2i = {"negative": 0, "positive": 1, "neutral": 2}
    hot = gold_multi_hot([["positive", "neutral"], "negative|positive", "[]", '["neutral"]', "0, 2", 1], l2i, 3, "t")
    assert hot.tolist() == [[0, 1, 1], [1, 1, 0], [0, 0, 0], [0, 0, 1], [1, 0, 1], [0, 1, 0]]
    assert label_set("a|b", "t") == ["a", "b"]
    with pytest.raises(EebertError, match="not one the model knows"):
        gold_multi_hot(["positive|happy"], l2i, 3, "the train split")


def test_label_margin_waits_for_the_least_decided_label():
    crit = build_criterion("label-margin")
    logits = torch.tensor([[[8.0, -8.0], [8.0, 0.0]]])  # [N=1, K=2, C=2]: exit 1 has one undecided label
    s = crit.scores(logits)
    assert s[0, 0].item() < 0.01 and s[0, 1].item() == pytest.approx(1.0)


@pytest.fixture(scope="module")
def ml_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("multilabel")
    ckpt, data = make_multilabel_case(root)
    return ckpt, data, root


def test_multi_label_end_to_end(ml_case):
    ckpt, data, root = ml_case
    from transformers import AutoConfig

    assert task_of(AutoConfig.from_pretrained(ckpt)).name == "multi-label"
    art = root / "art"
    r = cli("attach", ckpt, "--data", data, "--out", art, "--epochs", 30, "--lr", 3e-3, "--json")
    assert r.exit_code == 0, r.output
    cfg = json.loads((art / "eebert_config.json").read_text())
    assert cfg["task"] == "multi-label" and cfg["objective"]["name"] == "bce-distil"
    r = cli("calibrate", art, "--target-speedup", 1.3, "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)
    assert cal["criterion"] == "label-margin" and cal["headline_metric"] == "micro_f1"
    assert {"accuracy", "micro_f1", "macro_f1"} <= set(cal["validation"]["metrics"])
    r = cli("benchmark", art, "--timing-samples", 5, "--repeats", 1, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads((art / "report.json").read_text())
    assert rep["task"] == "multi-label" and rep["headline_metric"] == "micro_f1"
    for row in ("deployed", "early_exit", "static_truncation", "oracle"):
        assert 0.0 <= rep[row]["micro_f1"] <= 1.0 and 0.0 <= rep[row]["macro_f1"] <= 1.0
    # the deployed row is the shipped model's label sets (its own forward here) against the test split's
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.model.features import encode
    from eebert_cli.model.runtime import pad_batch
    from eebert_cli.scoring.outputs import split_outputs

    a, d = load_artifact(art), load_data(DataConfig(spec=str(data)))
    enc = encode(a.deployed.tokenizer, d.split("test"), a.config["max_length"])
    ids, mask, types = pad_batch(enc.input_ids, enc.token_type_ids, enc.pad_id)
    with torch.no_grad():
        sets = torch.sigmoid(a.deployed.model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits) > 0.5
    gold = split_outputs(a, d, "test").labels
    assert rep["deployed"]["micro_f1"] == pytest.approx(micro_f1(sets, gold), abs=1e-9)
    assert rep["deployed"]["macro_f1"] == pytest.approx(macro_f1(sets, gold), abs=1e-9)
    assert rep["early_exit"]["speedup_flops"] > 1.0
    assert rep["timing"]["exit_mismatches"] == 0  # the runtime takes the exits calibration simulated
    assert "micro-F1 %" in (art / "report.md").read_text()
    for m in ("micro-f1", "macro-f1"):  # every metric the task reports can be named (micro-f1 was refused)
        r = cli("benchmark", art, "--repeats", 0, "--metric", m, "--json")
        assert r.exit_code == 0 and json.loads(r.stdout)["headline_metric"] == m.replace("-", "_"), r.output
    r = cli("predict", art, "good great movie", "awful plot", "the film", "--batch-size", 2, "--json")
    assert r.exit_code == 0, r.output
    preds = json.loads(r.stdout)
    for p in preds:
        assert set(p["labels"]) <= {"negative", "positive"} and p["label"] == "|".join(p["labels"])
        assert len(p["probs"]) == 2 and p["labels"] == [n for n, q in zip(["negative", "positive"], p["probs"]) if q > 0.5]


def test_multi_label_without_labels_learns_the_deployed_label_sets(ml_case, monkeypatch):
    """The exits train on the deployed model's label sets (multi-hot where its sigmoid passes 0.5), not on the
    file's labels."""
    import eebert_cli.train.attach as attach_module

    ckpt, data, root = ml_case
    seen, real = {}, attach_module.train_method

    def spy(deployed, feats, targets, *a, **k):
        seen.update(targets=targets.clone(), teacher=feats.teacher.clone())
        return real(deployed, feats, targets, *a, **k)

    monkeypatch.setattr(attach_module, "train_method", spy)
    r = cli("attach", ckpt, "--data", data, "--out", root / "nolab", "--epochs", 2, "--no-labels", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["targets"] == "deployed-predictions"
    assert seen["teacher"].shape == seen["targets"].shape  # one target per label
    assert torch.equal(seen["targets"], (torch.sigmoid(seen["teacher"].float()) > 0.5).float())


@pytest.mark.parametrize("args,line", [
    (["--objective", "joint"], "objective 'joint' is for classification, this model does multi-label"),
    (["--exits", "leco"], "exit head 'leco' is for classification / regression, this model does multi-label"),
    (["--gates", "smartbert"], "skipping gate 'smartbert' is for classification, this model does multi-label"),
])
def test_single_label_methods_are_refused_before_work(ml_case, args, line):
    ckpt, data, root = ml_case
    r = cli("attach", ckpt, "--data", data, "--out", root / "refused", *args)
    assert r.exit_code == 1 and line in r.output and "Traceback" not in r.output, r.output


def test_single_label_criterion_is_refused_with_the_multi_label_one_named(ml_case):
    ckpt, data, root = ml_case
    art = root / "crit"
    assert cli("attach", ckpt, "--data", data, "--out", art, "--epochs", 2).exit_code == 0
    r = cli("calibrate", art, "--target-speedup", 1.2, "--criterion", "maxprob")
    assert r.exit_code == 1 and "label-margin" in r.output, r.output
