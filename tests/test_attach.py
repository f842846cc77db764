"""Training with the backbone frozen: bit-identical backbone, one backbone pass for k epochs."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from eebert_cli.model.artifact import CONFIG, WEIGHTS, load_artifact, read_json
from eebert_cli.backbones.bert import BertAdapter
from eebert_cli.train.config import AttachConfig
from eebert_cli.data import DataConfig
from eebert_cli.train.attach import attach
from eebert_cli.train.config import TrainConfig


def test_backbone_is_bit_identical_and_artifact_holds_exit_weights_only(tiny_ckpt, tiny_data, tmp_path):
    before = load_file(tiny_ckpt / "model.safetensors")
    out = tmp_path / "art"
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=3)), out)
    after = load_file(tiny_ckpt / "model.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    art = load_artifact(out)
    live = art.deployed.model.state_dict()
    assert all(torch.equal(live[k], before[k]) for k in before if k in live)
    saved = load_file(out / WEIGHTS)
    assert saved and all(k.startswith("heads.") for k in saved)
    cfg = read_json(out / CONFIG)
    assert cfg["exits"]["layers"] == [1, 2, 3] and cfg["labels"] == ["negative", "positive"]
    assert len(cfg["backbone"]["sha256"]) == 64


@pytest.mark.parametrize("exits", ["mean-mlp", "attention"])  # pooled features, and token states
def test_k_epochs_cost_one_backbone_pass(exits, tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    calls = {"n": 0}
    original = BertAdapter.layer

    def counting(self, index, hidden, state):
        calls["n"] += hidden.shape[0]
        return original(self, index, hidden, state)

    monkeypatch.setattr(BertAdapter, "layer", counting)
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)),
           AttachConfig(exits=exits, train=TrainConfig(epochs=4, patience=100)), tmp_path / "a")
    assert calls["n"] == 200 * 4  # 200 training examples x 4 layers, once


def test_training_without_labels_targets_the_deployed_predictions(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    import eebert_cli.train.attach as attach_module

    seen, real = {}, attach_module.train_method

    def spy(deployed, feats, targets, *a, **k):
        seen.update(targets=targets.clone(), teacher=feats.teacher.clone())
        return real(deployed, feats, targets, *a, **k)

    monkeypatch.setattr(attach_module, "train_method", spy)
    res = attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data), label_column=None),
                 AttachConfig(train=TrainConfig(epochs=2)), tmp_path / "a")
    assert res["targets"] == "deployed-predictions"
    assert torch.equal(seen["targets"], seen["teacher"].argmax(-1))  # the deployed model's classes


def test_exits_learn_the_task(tiny_ckpt, tiny_data, tmp_path):
    """On separable toy data the trained exits beat chance by a wide margin."""
    from eebert_cli.data import load_data
    from eebert_cli.scoring.outputs import split_outputs

    out = tmp_path / "a"
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)),
           AttachConfig(train=TrainConfig(epochs=60, lr=3e-3, patience=60)), out)
    art = load_artifact(out)
    outputs = split_outputs(art, load_data(DataConfig(spec=str(tiny_data))), "test")
    acc = (outputs.logits[:, 2].argmax(-1) == outputs.labels).double().mean().item()
    assert acc > 0.75


def test_a_failed_attach_leaves_the_old_artifact(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "a"
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=1)), out)
    old = (out / WEIGHTS).read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr("eebert_cli.model.artifact.save_file", boom)
    try:
        attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(train=TrainConfig(epochs=2, seed=1)), out)
    except RuntimeError:
        pass
    assert (out / WEIGHTS).read_bytes() == old
    # no temp dirs left; the finished backbone pass stays cached (complete chunks only) for the re-run
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == [".a.features", "a"]
    manifest = read_json(tmp_path / ".a.features" / "manifest.json")
    assert len(manifest["done"]) == len(manifest["chunks"])


@pytest.mark.parametrize("head,chosen", [("mean-mlp", 1), ("linear", 1), ("attention", 0), ("attn-pool", 0)])
def test_exit_training_threads_follow_what_the_heads_read(head, chosen):
    """One thread for pooled heads (small products), torch's default for token-reading heads; a set
    value wins."""
    from eebert_cli.backbones import Dims
    from eebert_cli.exits import ExitSet, ExitSpec
    from eebert_cli.train.loop import training_threads
    from eebert_cli.train.config import TrainConfig

    exits = ExitSet(ExitSpec(head, [1, 2], {}, {}), Dims(3, 16, 32, 2, 2))
    assert training_threads(TrainConfig(), exits) == chosen
    assert training_threads(TrainConfig(threads=3), exits) == 3
    assert training_threads(TrainConfig(threads=0), exits) == 0
