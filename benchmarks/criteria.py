"""Every criterion calibrated on the demo's real data, evaluated on the test split, side by side.

    PYTHONPATH=$PWD python benchmarks/criteria.py [--checkpoint DIR] [--cache DIR] [--limit N] [--epochs E]

Attaches mean-mlp exits to the deployed model once (cached in --cache), runs the
backbone once per split (exit outputs cached as safetensors), then calibrates
each criterion on validation exactly as `eebert calibrate` does
(`operating_point.choose_operating_point`) and applies the thresholds to the test split. Prints:
1. test accuracy at a calibrated 2.0x for every criterion, with static
   truncation and oracle rows;
2. for targets 1.5, 2.0, 3.0 and every criterion of the side-by-side list (defaults): the
   test FLOPs speedup, the validation estimate, and both gaps (the done-when check:
   test >= 0.95 x target and |test / validation - 1| <= 5%).
Static truncation and the oracle are the rows `eebert benchmark` reports (baselines.py):
one definition each. Exit training uses eebert's defaults unless --batch-size / --lr say
otherwise (docs/criteria.md names the settings of the run it shows).
FLOPs only: no wall-clock timing here, so results do not depend on machine load.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eebert_cli.model.artifact import load_artifact  # noqa: E402
from eebert_cli.scoring.config import CalibrationConfig  # noqa: E402
from eebert_cli.train.config import AttachConfig  # noqa: E402
from eebert_cli.criteria import build_criterion  # noqa: E402
from eebert_cli.scoring.baselines import oracle_exits, static_exit  # noqa: E402
from eebert_cli.data import DataConfig, TaskData, load_data  # noqa: E402
from eebert_cli.core.errors import EebertError  # noqa: E402
from eebert_cli.train.attach import attach  # noqa: E402
from eebert_cli.model.device import place_artifact, resolve  # noqa: E402
from eebert_cli.model.device_config import DeviceConfig  # noqa: E402
from eebert_cli.scoring.operating_point import choose_operating_point  # noqa: E402
from eebert_cli.scoring.outputs import OutputsCache, SplitOutputs, problem_for, split_outputs  # noqa: E402
from eebert_cli.model.runtime import thresholds_from_json  # noqa: E402
from eebert_cli.train.config import TrainConfig  # noqa: E402

SIDE_BY_SIDE = [("entropy", {}), ("entropy", {"normalized": True}), ("maxprob", {}), ("patience", {}),
                ("patience", {"tiebreak": False}), ("pcee", {}), ("cobee", {"tiebreak": False}), ("dge", {}), ("dge", {"divergence": "kl"}), ("dge", {"reference": "mean"}),
                ("dge", {"patience": 2}), ("cobee", {}), ("cobee", {"weighted": True}), ("learned", {})]
TARGETS = (1.5, 2.0, 3.0)
CHECKED = tuple(dict.fromkeys(name for name, _ in SIDE_BY_SIDE))  # every criterion listed, once


def outputs_for(art, data, split: str, cache: Path, limit: int = 0) -> SplitOutputs:
    if limit:  # the cache is keyed by the rows' fingerprint, so a slice has its own entry
        s = data.split(split)
        data = TaskData(data.name, {split: s.subset(list(range(min(limit, len(s)))))})
    return split_outputs(art, data, split, cache=OutputsCache(cache / "outputs"))


def calibrated(art, val, test, name, params, target):
    cfg = CalibrationConfig(criterion=name, criterion_params=params, target_speedup=target, bootstrap=200)
    t0 = time.perf_counter()
    res = choose_operating_point(lambda gt: val, [None], cfg, None, art)[1].to_dict()
    secs = time.perf_counter() - t0
    crit = build_criterion(name, res["criterion_params"], art)
    o = problem_for(test, crit, art.exits).outcome(torch.tensor(thresholds_from_json(res["thresholds"]), dtype=torch.float64))
    return res, o, secs


def label(name, params):
    return name + (" " + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=".cache/demo/minilm-rotten-tomatoes")
    ap.add_argument("--data", default="rotten-tomatoes")
    ap.add_argument("--cache", default=".cache/criteria")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    ap.add_argument("--device", default="auto", help="where the backbone runs (attach and calibration alike)")
    ap.add_argument("--dtype", default="auto", help="backbone precision (see `eebert attach --help`)")
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs,
                    help="exit training epochs when attaching (smoke runs use few; the cached artifact is reused)")
    ap.add_argument("--batch-size", type=int, default=TrainConfig().batch_size, help="exit training batch size")
    ap.add_argument("--lr", type=float, default=TrainConfig().lr, help="exit training learning rate")
    ap.add_argument("--limit", type=int, default=0,
                    help="calibrate and evaluate on the first N validation / test examples only (smoke runs; "
                         "the exits are still trained on the whole train split)")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    art_dir = cache / "artifact"
    dcfg = DataConfig(spec=args.data)
    dev = DeviceConfig(args.device, args.dtype)
    where = resolve(dev)
    if not (art_dir / "eebert_config.json").exists():
        print(f"attaching mean-mlp exits to {args.checkpoint} -> {art_dir} (once)", flush=True)
        attach(args.checkpoint, dcfg, AttachConfig(exits="mean-mlp", max_length=64,
                                                   train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size,
                                                                     lr=args.lr)), art_dir, device=dev)
    art = load_artifact(art_dir)
    place_artifact(art, where)  # scores computed where the exits were trained (the outputs cache keys on it)
    data = load_data(dcfg)
    val, test = (outputs_for(art, data, s, cache, args.limit) for s in ("validation", "test"))
    dep_val = (val.logits[:, -1].argmax(-1) == val.labels).double().mean().item()
    dep_test = (test.logits[:, -1].argmax(-1) == test.labels).double().mean().item()
    print(f"\n{args.data}: validation {len(val.lengths)}, test {len(test.lengths)} examples; exits after layers "
          f"{art.exits.layers} of {art.deployed.adapter.dims.num_layers}; deployed accuracy val "
          f"{100 * dep_val:.2f} / test {100 * dep_test:.2f}\n")
    record = {"side_by_side": [], "targets": []}

    print("1. Calibrated for 2.0x on validation, applied to test")
    print(f"{'criterion':34s} {'val x':>7s} {'val acc':>8s} {'test x':>7s} {'test acc':>9s} {'search s':>9s}  chosen params")
    for name, params in SIDE_BY_SIDE:
        try:
            res, o, secs = calibrated(art, val, test, name, params, 2.0)
        except EebertError as e:
            print(f"{label(name, params):34s} {e.message}")
            continue
        v = res["validation"]
        print(f"{label(name, params):34s} {v['speedup_flops']:6.2f}x {100 * v['accuracy']:8.2f} {o.speedup:6.2f}x "
              f"{100 * o.accuracy:9.2f} {secs:9.2f}  {json.dumps(res['criterion_params'])}")
        record["side_by_side"].append({"criterion": name, "params": res["criterion_params"],
                                       "validation_speedup": v["speedup_flops"], "validation_accuracy": v["accuracy"],
                                       "test_speedup": o.speedup, "test_accuracy": o.accuracy})
    # the report's own baseline rows (baselines.py): static truncation nearest 2.0x, the oracle
    answers = test.task.answers(test.logits)
    every = torch.arange(len(test.lengths))
    k, s_spd = static_exit(test, art.exits, art.deployed.adapter.dims, 2.0)
    s_acc = test.task.same(answers[:, k], test.labels).double().mean().item()
    layer = (art.exits.layers + [art.deployed.adapter.dims.num_layers])[k]
    print(f"{'static truncation (layer ' + str(layer) + ')':34s} {'':7s} {'':8s} {s_spd:6.2f}x {100 * s_acc:9.2f}")
    oe = oracle_exits(test.task.right(test.logits, test.reference))
    o_spd = test.full.sum().item() / test.cost.gather(1, oe[:, None]).sum().item()
    o_acc = test.task.same(answers[every, oe], test.labels).double().mean().item()
    print(f"{'oracle (first right exit, else exit 1)':34s} {'':7s} {'':8s} {o_spd:6.2f}x {100 * o_acc:9.2f}")
    print(f"{'deployed model':34s} {'':7s} {100 * dep_val:8.2f} {1.0:6.2f}x {100 * dep_test:9.2f}")
    record["static_truncation"] = {"layer": layer, "speedup": s_spd, "accuracy": s_acc}
    record["oracle"] = {"speedup": o_spd, "accuracy": o_acc}

    print("\n2. Targets: test FLOPs speedup vs the target and vs the validation estimate (done when "
          "test >= -5% of target and within 5% of validation)")
    print(f"{'criterion':14s} {'target':>6s} {'val x (95% CI)':>20s} {'test x':>7s} {'test-target':>12s} "
          f"{'test-val':>9s} {'val acc':>8s} {'test acc':>9s}  ok")
    misses = 0
    for name in CHECKED:
        for target in TARGETS:
            try:
                res, o, _ = calibrated(art, val, test, name, {}, target)
            except EebertError as e:
                print(f"{name:14s} {target:6.1f} unreachable: {e.message}")
                continue
            v = res["validation"]
            g_target, g_val = o.speedup / target - 1, o.speedup / v["speedup_flops"] - 1
            ok = g_target >= -0.05 and abs(g_val) <= 0.05
            misses += not ok
            ci = v["speedup_ci95"]
            print(f"{name:14s} {target:6.1f} {v['speedup_flops']:6.2f}x ({ci[0]:.2f}-{ci[1]:.2f}) {o.speedup:6.2f}x "
                  f"{100 * g_target:+11.1f}% {100 * g_val:+8.1f}% {100 * v['accuracy']:8.2f} {100 * o.accuracy:9.2f}"
                  f"  {'yes' if ok else 'MISS'}")
            record["targets"].append({"criterion": name, "target": target, "validation_speedup": v["speedup_flops"],
                                      "validation_speedup_ci95": ci, "test_speedup": o.speedup,
                                      "gap_test_vs_target": g_target, "gap_test_vs_validation": g_val,
                                      "validation_accuracy": v["accuracy"], "test_accuracy": o.accuracy, "ok": ok})
    print(f"\n{misses} miss(es)")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
