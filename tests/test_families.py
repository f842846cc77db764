"""Every supported encoder family: exact logits layer by layer, and attach/calibrate/benchmark via the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from conftest import FAMILIES, MODEL_TYPE, make_model, make_rows, write_csv
from eebert_cli.model.checkpoint import load_deployed
from eebert_cli.cli import app

TEXTS = ["good movie", "the plot was very dull and the acting was poor not great", "nice"]
PAIRS = ["great film", "bad", "the acting was not very good"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {f: make_model(root / f, f, seed=1) for f in FAMILIES}


def layer_by_layer(adapter, batch, mask):
    h = adapter.embed(batch["input_ids"], mask, batch.get("token_type_ids"))
    state = adapter.prepare(h, mask)
    for i in range(adapter.dims.num_layers):
        h = adapter.layer(i, h, state)
    return adapter.head(h, mask)


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_by_layer_reproduces_the_deployed_logits(checkpoints, family):
    dep = load_deployed(checkpoints[family])
    assert dep.model.config.model_type == MODEL_TYPE.get(family, family)
    with torch.no_grad():
        for pairs in (None, PAIRS):  # single texts and sentence pairs (token types where the family has them)
            batch = dep.tokenizer(TEXTS, pairs, padding=True, return_tensors="pt")
            assert (batch["attention_mask"] == 0).any()
            ref = dep.model(**batch).logits
            ours = layer_by_layer(dep.adapter, batch, batch["attention_mask"])
            assert (ours - ref).abs().max().item() <= 1e-5
        one = dep.tokenizer(["the film was great"], ["not bad"], return_tensors="pt")
        ref = dep.model(**one).logits
        assert (layer_by_layer(dep.adapter, one, None) - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_pooler_mlp_exits_start_from_the_heads_dense_layer(checkpoints, family):
    from eebert_cli.exits import ExitSet, ExitSpec

    ad = load_deployed(checkpoints[family]).adapter
    dense = ad.pooler()
    assert dense is not None and dense.weight.shape == (ad.dims.hidden_size, ad.dims.hidden_size)
    exits = ExitSet(ExitSpec("pooler-mlp", [1, 2]), ad.dims)
    exits.init_from(ad)
    assert all(torch.equal(h.dense.weight, dense.weight) for h in exits.heads)


def test_albert_steps_run_their_shared_group(checkpoints):
    ad = load_deployed(checkpoints["albert"]).adapter
    groups = ad.encoder.encoder.albert_layer_groups
    assert len(groups) == 2 and ad._group == [0, 0, 1, 1]


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    """Toy sentence pairs: the sentiment words are spread over both texts."""
    d = tmp_path_factory.mktemp("pairs")
    rows = []
    for r in make_rows(200, seed=3):
        words = r["text"].split()
        half = max(1, len(words) // 2)
        rows.append({"text": " ".join(words[:half]), "text2": " ".join(words[half:]) or "the", "label": r["label"]})
    for name, part in (("train", rows[:120]), ("validation", rows[120:160]), ("test", rows[160:])):
        write_csv(d / f"{name}.csv", part)
    return d


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "xlm-roberta"])  # xlm-roberta = roberta adapter
def test_attach_calibrate_benchmark_through_the_cli(checkpoints, pair_data, tmp_path, family):
    runner = CliRunner()
    art = tmp_path / "art"
    data = ["--data", str(pair_data), "--pair-column", "text2"]
    r = runner.invoke(app, ["attach", str(checkpoints[family]), "--out", str(art), *data, "--epochs", "3", "--lr", "3e-3",
                            "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["examples"] == 120
    r = runner.invoke(app, ["calibrate", str(art), "--target-speedup", "1.3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["validation"]["speedup_flops"] >= 1.3 - 1e-9
    r = runner.invoke(app, ["benchmark", str(art), "--timing-samples", "5", "--repeats", "1", "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["timing"]["exit_mismatches"] == 0  # batch-1 runtime exits where the simulation says
    assert report["deployed"]["agreement"] == 1.0 and report["early_exit"]["speedup_flops"] > 1.0

    # per-sample exits in a batch (rows leave, per-batch state is selected) == one by one
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.model.runtime import EarlyExitModel

    from eebert_cli.scoring.outputs import split_outputs

    model = EarlyExitModel.from_artifact(art)
    data_ = load_data(DataConfig(spec=str(pair_data), pair_column="text2"))
    test = data_.split("test")
    one = model.predict(test.texts, test.pairs, batch_size=1)
    many = model.predict(test.texts, test.pairs, batch_size=16)
    assert len({p.exit_layer for p in one}) > 1  # some rows leave early, some go on
    # Toy texts repeat across splits, so a score can sit exactly on a calibrated threshold (thresholds are
    # score quantiles); there float noise between padded and unpadded runs may flip the exit. Elsewhere the
    # exits and outputs must agree.
    scores = model.criterion.scores(split_outputs(model.artifact, data_, "test").logits)[:, :-1]
    thr = torch.tensor(model.thresholds)
    on_edge = ((scores - thr).abs() <= 1e-5).any(1)
    assert on_edge.double().mean() < 0.5
    for a, b, edge in zip(one, many, on_edge.tolist()):
        if not edge:
            assert a.exit_layer == b.exit_layer and a.label == b.label
            assert max(abs(x - y) for x, y in zip(a.probs, b.probs)) < 1e-4
