"""Exit-head probe: head families on one checkpoint, per-exit accuracy on validation.

    PYTHONPATH=$PWD python benchmarks/exit_heads.py [--checkpoint DIR] [--data SPEC] [--heads a,b] [--seeds 0,1,2]

Each head family is attached with the same training settings (eebert's defaults unless
--epochs / --batch-size / --lr say otherwise) and every seed re-trains it on one backbone
pass (a feature cache per head family's reductions); each exit's accuracy on the
validation split is printed as mean ± standard deviation over seeds, next to the
deployed model's. Validation only: this is how eebert's default head was chosen, so the
test split stays unseen. Wall clock is not measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eebert_cli import steps  # noqa: E402
from eebert_cli.model.artifact import load_artifact  # noqa: E402
from eebert_cli.train.config import AttachConfig  # noqa: E402
from eebert_cli.data import DataConfig, TaskData, load_data  # noqa: E402
from eebert_cli.scoring.outputs import split_outputs  # noqa: E402
from eebert_cli.train.config import TrainConfig  # noqa: E402

# The six heads the README's table was measured with; --heads takes any registered sentence head
# (conv, transformer: minutes more per seed on a CPU).
HEADS = ("linear", "pooler-mlp", "mean-mlp", "max-mlp", "attn-pool", "attention")


def per_exit(folder: Path, data: TaskData) -> tuple[list[int], list[float], float]:
    art = load_artifact(folder)
    out = split_outputs(art, data, "validation")
    task = out.task
    accs = [task.same(task.answers(out.logits[:, k]), out.reference).double().mean().item()
            for k in range(len(art.exits.layers))]
    return art.exits.layers, accs, task.same(out.deployed_pred, out.reference).double().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=".cache/demo/minilm-rotten-tomatoes")
    ap.add_argument("--data", default="rotten-tomatoes")
    ap.add_argument("--heads", default=",".join(HEADS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--max-samples", type=int, default=None, help="rows per split (smoke runs)")
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    ap.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    ap.add_argument("--lr", type=float, default=TrainConfig().lr)
    ap.add_argument("--cache", default=".cache/exit-heads")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    cache = Path(args.cache)
    dcfg = DataConfig(spec=args.data, max_samples=args.max_samples)
    data = load_data(dcfg)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows, deployed, layers = {}, None, None
    for head in args.heads.split(","):
        accs = []
        for seed in seeds:
            folder = cache / head / f"seed-{seed}"
            cfg = AttachConfig(exits=head, max_length=args.max_length, feature_cache=str(cache / head / "features"),
                               train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=seed))
            steps.attach(args.checkpoint, dcfg, cfg, folder, overwrite=True)
            layers, acc, deployed = per_exit(folder, data)
            accs.append(acc)
        rows[head] = [(statistics.fmean(a), statistics.stdev(a) if len(a) > 1 else 0.0) for a in zip(*accs)]
        print(f"{head:12s} " + " ".join(f"{100 * m:6.2f}±{100 * s:4.2f}" for m, s in rows[head]), flush=True)
    print(f"\nvalidation accuracy % per exit (layers {layers}), mean ± sd over seeds {seeds}; "
          f"deployed model {100 * deployed:.2f}%")
    print("| head | " + " | ".join(f"layer {l}" for l in layers) + " |")
    print("|---|" + "---|" * len(layers))
    for head, vals in rows.items():
        print(f"| {head} | " + " | ".join(f"{100 * m:.2f} ± {100 * s:.2f}" for m, s in vals) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"layers": layers, "deployed": deployed, "seeds": seeds,
                                               "heads": {h: [{"mean": m, "sd": s} for m, s in v]
                                                         for h, v in rows.items()}}, indent=2))


if __name__ == "__main__":
    main()
