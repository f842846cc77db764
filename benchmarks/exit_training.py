"""Exit-training settings side by side: time, epochs, held-out loss and the calibrated validation result.

    PYTHONPATH=$PWD python benchmarks/exit_training.py [--recipe recipes/quickstart.toml]
        [--checkpoint DIR] [--data SPEC] [--settings 64:1e-3 256:4e-3] [--target-speedup 2.0]
        [--max-samples N] [--json OUT.json]

How the default batch size and learning rate of `attach.train` were chosen, and
how to check them on your own checkpoint. One backbone pass fills a feature
cache that every setting then reads, so only exit training differs between
rows. For each ``BATCH:LR`` the recipe's attach runs (its other settings as
they are), the exits are calibrated for ``--target-speedup`` on validation with
the recipe's criterion, and the row reports training seconds (with the
``learned`` scorer's fit), best epoch, held-out loss and the validation
accuracy, agreement and FLOPs speedup at the chosen thresholds. Nothing is
read from test. Seconds depend on the machine's load (printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eebert_cli.model.artifact import load_artifact  # noqa: E402
from eebert_cli.train.attach import attach  # noqa: E402
from eebert_cli.data import load_data  # noqa: E402
from eebert_cli.steps import calibrate  # noqa: E402
from eebert_cli.recipe import load_recipe  # noqa: E402
from eebert_cli.train.config import TrainConfig  # noqa: E402

DEFAULT_SETTINGS = ["64:1e-3", f"{TrainConfig.batch_size}:{TrainConfig.lr:g}"]


def setting(text: str) -> tuple[int, float]:
    batch, _, lr = text.partition(":")
    return int(batch), float(lr)


def run(recipe: str, checkpoint: str | None, data: str | None, settings: list[str], target: float,
        max_samples: int | None) -> dict:
    r = load_recipe(Path(recipe))
    data_cfg = dataclasses.replace(r.data, **({"spec": data} if data else {}),
                                   **({"max_samples": max_samples} if max_samples else {}))
    split = load_data(data_cfg)
    cal_cfg = dataclasses.replace(r.calibrate, target_speedup=target, max_drop=None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "features"  # kept for the whole run: one backbone pass for every setting
        for i, text in enumerate(settings):
            batch, lr = setting(text)
            cfg = dataclasses.replace(r.attach, feature_cache=str(cache),
                                      train=dataclasses.replace(r.attach.train, batch_size=batch, lr=lr))
            out = Path(tmp) / f"artifact-{i}"
            res = attach(checkpoint or r.checkpoint, data_cfg, cfg, out)
            cal = calibrate(load_artifact(out), split, cal_cfg).to_dict()["validation"]
            rows.append({"batch_size": batch, "lr": lr, "train_seconds": res["train_seconds"],
                         "best_epoch": res["best_epoch"], "heldout_loss": round(res["heldout_loss"], 5),
                         "validation_accuracy": cal.get("accuracy"), "validation_agreement": cal.get("agreement"),
                         "validation_speedup": round(cal["speedup_flops"], 3),
                         "deployed_validation_accuracy": cal.get("deployed_accuracy")})
            if i == 0:
                first_pass = res["feature_seconds"]
    return {"recipe": recipe, "checkpoint": checkpoint or r.checkpoint, "data": data_cfg.spec,
            "examples": res["examples"], "target_speedup": target, "backbone_pass_s": first_pass,
            "load_average": os.getloadavg(), "rows": rows}


def show(report: dict, json_path: str | None) -> dict:
    print(f"{report['checkpoint']} on {report['data']}: {report['examples']} training rows, backbone pass "
          f"{report['backbone_pass_s']} s (once), calibrated for {report['target_speedup']}x on validation, "
          f"load {tuple(round(x, 2) for x in report['load_average'])}")
    print(f"{'batch':>5} {'lr':>8} {'train s':>8} {'best epoch':>10} {'held-out loss':>13} "
          f"{'val acc %':>9} {'agree %':>8} {'speedup':>8}")
    for row in report["rows"]:
        pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
        print(f"{row['batch_size']:>5} {row['lr']:>8g} {row['train_seconds']:>8.2f} {row['best_epoch']:>10} "
              f"{row['heldout_loss']:>13.5f} {pct(row['validation_accuracy']):>9} "
              f"{pct(row['validation_agreement']):>8} {row['validation_speedup']:>7.3f}x")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/quickstart.toml")
    ap.add_argument("--checkpoint", default=None, help="Override the recipe's checkpoint.")
    ap.add_argument("--data", default=None, help="Override the recipe's data (built-in corpus, folder or id).")
    ap.add_argument("--settings", nargs="+", default=DEFAULT_SETTINGS, help="BATCH:LR pairs to compare.")
    ap.add_argument("--target-speedup", type=float, default=2.0)
    ap.add_argument("--max-samples", type=int, default=None, help="Cap rows per split (a slice, for smoke runs).")
    ap.add_argument("--json", default=None, help="Also write the figures here.")
    args = ap.parse_args(argv)
    return show(run(args.recipe, args.checkpoint, args.data, args.settings, args.target_speedup,
                    args.max_samples), args.json)


if __name__ == "__main__":
    main()
