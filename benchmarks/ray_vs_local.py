"""The attach backbone pass on a local process vs on a local Ray (N one-CPU actors), one run.

    PYTHONPATH=$PWD python benchmarks/ray_vs_local.py [--checkpoint DIR] [--rows 1000] [--cpus 2]
        [--max-length 64] [--json OUT.json]

Both passes write the same feature cache format (``feature_cache.attach_pass``)
over the same slice of the Rotten Tomatoes training reviews (``--data`` for
another), and the script checks that their features agree. Reported: seconds of
each pass, rows/s, Ray's start-up (``ray.init``) separately, and the largest
feature difference (the local pass sums on torch's threads, each worker on one).
On one machine Ray adds processes, not cores: the figure says what sharding
costs here, and the cluster is where it pays.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ray  # noqa: E402

from attach_cost import show  # noqa: E402
from eebert_cli.model import feature_cache  # noqa: E402
from eebert_cli.model.checkpoint import load_deployed  # noqa: E402
from eebert_cli.data import DataConfig, load_data  # noqa: E402
from eebert_cli.model.device_config import DeviceConfig  # noqa: E402
from eebert_cli.deploy.ray_executor import attach_runner  # noqa: E402
from eebert_cli.core.ui import SILENT  # noqa: E402


def measure(dep, split, args, report: dict) -> None:
    layers = list(range(1, dep.adapter.dims.num_layers))
    needs = {layer: {"mean"} for layer in layers}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        local = feature_cache.attach_pass(dep, split, layers, needs, args.max_length, 64, Path(tmp) / "local",
                                          "cpu float32", SILENT)
        report["local_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            runner = attach_runner(DeviceConfig(device="cpu", executor="ray"))
            report["ray_start_s"] = round(time.perf_counter() - t, 2)
            t = time.perf_counter()
            remote = feature_cache.attach_pass(dep, split, layers, needs, args.max_length, 64, Path(tmp) / "ray",
                                               "cpu float32", SILENT, runner)
            report["ray_s"] = round(time.perf_counter() - t, 2)
        finally:
            ray.shutdown()
        report["max_feature_difference"] = float((local.reduced["mean"] - remote.reduced["mean"]).abs().max())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=".cache/demo/minilm-rotten-tomatoes")
    ap.add_argument("--data", default="rotten-tomatoes")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs given to the local Ray (one actor each).")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    dep = load_deployed(args.checkpoint)
    full = load_data(DataConfig(spec=args.data)).split("train")
    split = full.subset(list(range(min(args.rows, len(full)))))
    chunk_rows, feature_cache.CHUNK_ROWS = feature_cache.CHUNK_ROWS, max(1, -(-args.rows // (2 * args.cpus)))
    report: dict = {"rows": len(split), "cpus": args.cpus, "chunk_rows": feature_cache.CHUNK_ROWS}
    try:
        measure(dep, split, args, report)
    finally:
        feature_cache.CHUNK_ROWS = chunk_rows  # two chunks per actor above; the default again
    report["local_rows_per_s"] = round(report["rows"] / report["local_s"], 1)
    report["ray_rows_per_s"] = round(report["rows"] / report["ray_s"], 1)
    report["ray_over_local_time"] = round(report["ray_s"] / report["local_s"], 3)
    return show(report, args.json)


if __name__ == "__main__":
    main()
