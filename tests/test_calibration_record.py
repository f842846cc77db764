"""calibration.json through the Calibration dataclass, and the split-outputs cache."""

import json

import pytest
import torch

from eebert_cli.model.artifact import load_artifact
from eebert_cli.train.attach import attach
from eebert_cli.model.calibration import FORMAT_VERSION, Calibration
from eebert_cli.train.config import AttachConfig
from eebert_cli.data import DataConfig, load_data
from eebert_cli.core.errors import EebertError
from eebert_cli.scoring.outputs import OutputsCache, split_outputs
from eebert_cli.train.config import TrainConfig


def test_calibration_round_trips_through_its_file(tmp_path):
    cal = Calibration(criterion="pcee", thresholds=[0.5, "never", "always"], criterion_params={"confidence": 0.8},
                      mode="max_drop", max_drop=0.5, quantize="int8", gate_threshold=0.75,
                      validation={"speedup_flops": 1.7, "accuracy": 0.81, "accuracy_ci95": [0.78, 0.84]},
                      margin={"method": "z*SE", "confidence": 0.9, "points": 0.4},
                      derived_from={"exits_sha256": "ab" * 32})
    path = cal.save(tmp_path)
    raw = json.loads(path.read_text())
    assert raw["format_version"] == FORMAT_VERSION and "at the chosen thresholds" in raw["ci_method"]
    assert Calibration.load(tmp_path) == cal
    assert not list(tmp_path.glob(".*"))  # the temp sibling was renamed away


def test_a_newer_calibration_format_is_refused_in_one_line(tmp_path):
    (tmp_path / "calibration.json").write_text(json.dumps({"criterion": "entropy", "thresholds": [1.0],
                                                           "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(EebertError, match="calibration format"):
        Calibration.load(tmp_path)


def test_split_outputs_cache_is_keyed_by_exits_split_and_backbone(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    cfg = AttachConfig(max_length=32, train=TrainConfig(epochs=1))
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), cfg, tmp_path / "a")
    art, data = load_artifact(tmp_path / "a"), load_data(DataConfig(spec=str(tiny_data)))
    cache = OutputsCache(tmp_path / "cache")
    first = split_outputs(art, data, "test", cache=cache)
    import eebert_cli.scoring.outputs as outputs

    monkeypatch.setattr(outputs, "extract", lambda *a, **k: pytest.fail("backbone pass ran on a cache hit"))
    again = split_outputs(art, data, "test", cache=cache)
    assert torch.equal(first.logits, again.logits) and torch.equal(first.cost, again.cost)
    assert torch.equal(first.features, again.features) and torch.equal(first.labels, again.labels)
    # other backbone weights miss the cache (the exits and the split unchanged): the pass runs again
    class Ran(Exception):
        pass

    def ran(*a, **k):
        raise Ran

    monkeypatch.setattr(outputs, "extract", ran)
    monkeypatch.setattr(art.deployed, "sha256", "0" * 64)
    with pytest.raises(Ran):
        split_outputs(art, data, "test", cache=cache)
    monkeypatch.undo()
    # another split, or other exit weights, miss the cache
    val = split_outputs(art, data, "validation", cache=cache)
    assert val.logits.shape == first.logits.shape and not torch.equal(val.logits, first.logits)
    attach(str(tiny_ckpt), DataConfig(spec=str(tiny_data)), AttachConfig(max_length=32, train=TrainConfig(epochs=1, seed=1)),
           tmp_path / "a")
    other = split_outputs(load_artifact(tmp_path / "a"), data, "test", cache=cache)
    assert not torch.equal(other.logits[:, :-1], first.logits[:, :-1])
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3
    assert not list((tmp_path / "cache").glob("*.pt")) and not list((tmp_path / "cache").glob("*.pkl"))
