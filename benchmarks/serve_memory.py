"""Memory of a serving process: resident set after `eebert serve`'s engine loads and answers, per runtime.

Each engine loads in a fresh process (``deploy/serve/engine.load_engine``, what `eebert serve`
builds) and answers one text alone, then a batch of texts; the process then reports its resident set
(``VmRSS``) and its peak (``VmHWM``) from /proc/self/status, so no run inherits another's pages.
Rows: the early-exit and the deployed server on PyTorch, and on ONNX Runtime when the artifact
has an export (``--onnx``, default ARTIFACT/onnx). An artifact calibrated with ``--quantize int8``
serves int8 in both runtimes.

    PYTHONPATH=. python benchmarks/serve_memory.py ARTIFACT [--onnx DIR] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["a gripping, beautifully shot film that never lets go", "dull , overlong and oddly smug",
         "the cast is fine but the script gives them nothing to do", "one of the year's best"]


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _measure(artifact: str, runtime: str, onnx_dir: str, deployed: bool, threads: int, out) -> None:
    try:
        from eebert_cli.deploy.serve.config import ServeConfig
        from eebert_cli.deploy.serve.engine import load_engine

        base = _status_mb("VmRSS")
        cfg = ServeConfig(artifact=artifact, runtime=runtime, onnx_dir=onnx_dir, deployed=deployed, threads=threads,
                          device="cpu")
        engine = load_engine(cfg)
        loaded = _status_mb("VmRSS")
        engine.run([(TEXTS[0], None)])  # one request alone (the batch-1 path), then a batch: what a server sees
        engine.run([(t, None) for t in TEXTS])
        out.put({"rss_imports_mb": base, "rss_loaded_mb": loaded, "rss_answered_mb": _status_mb("VmRSS"),
                 "peak_mb": _status_mb("VmHWM")})
    except BaseException as e:  # noqa: BLE001 - reported in the table, the other rows still run
        out.put({"error": f"{type(e).__name__}: {e}"})


def measure(artifact: str, runtime: str, onnx_dir: str, deployed: bool, threads: int) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing loaded before the engine
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(artifact, runtime, onnx_dir, deployed, threads, q))
    p.start()
    got = q.get()
    p.join()
    return got


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--onnx", default="", help="ONNX export (default ARTIFACT/onnx; none there: PyTorch rows only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    a = ap.parse_args(argv)
    onnx = a.onnx or str(Path(a.artifact) / "onnx")
    runtimes = ["pytorch"] + (["onnxruntime"] if (Path(onnx) / "manifest.json").is_file() else [])
    rows = []
    for runtime in runtimes:
        for deployed in (False, True):
            r = measure(a.artifact, runtime, onnx if runtime == "onnxruntime" else "", deployed, a.threads)
            rows.append({"runtime": runtime, "server": "deployed" if deployed else "early exit", **r})
    print(f"{a.artifact}: one engine per fresh process, {a.threads} threads, one text then a batch of {len(TEXTS)} answered")
    print(f"{'runtime':12s} {'server':11s} {'imports MB':>11s} {'loaded MB':>10s} {'answered MB':>12s} {'peak MB':>8s}")
    for r in rows:
        if "error" in r:
            print(f"{r['runtime']:12s} {r['server']:11s} error: {r['error']}")
            continue
        print(f"{r['runtime']:12s} {r['server']:11s} {r['rss_imports_mb']:11.0f} {r['rss_loaded_mb']:10.0f} "
              f"{r['rss_answered_mb']:12.0f} {r['peak_mb']:8.0f}")
    report = {"artifact": a.artifact, "threads": a.threads, "texts": len(TEXTS), "rows": rows}
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
