"""Attach cost: the whole `eebert attach` against its own backbone pass, in one run.

    PYTHONPATH=$PWD python benchmarks/attach_cost.py [--recipe recipes/quickstart.toml] [--checkpoint DIR]
        [--exits HEAD] [--max-samples N] [--json OUT.json]

With the backbone frozen, attach should cost about one backbone pass over the
training rows. This runs the recipe's attach once (a fresh feature cache, so
the pass really runs) and splits its wall time into loading, the backbone pass,
exit training (with the learned criterion's scorer) and writing, with the ratio
whole / pass. It then re-trains the same exits on the same cached features on
the other thread choice (torch's default where attach chose one thread, one
thread where it chose more: ``train.loop.training_threads``) and gives both
per epoch (early stopping may end them at different epochs), and times one AdamW update of
the exits' parameters three ways (fused, as attach runs it; foreach; per
tensor). Wall times depend on the machine's load: quote them with the load
(the script prints the load average).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eebert_cli.train import attach as attach_step
from eebert_cli.model import feature_cache  # noqa: E402
from eebert_cli.model.checkpoint import load_deployed  # noqa: E402
from eebert_cli.model.device import cpu_threads  # noqa: E402
from eebert_cli.exits import ExitSet  # noqa: E402
from eebert_cli.objectives import build_objective  # noqa: E402
from eebert_cli.recipe import load_recipe  # noqa: E402
from eebert_cli.train.loop import train_exits, training_threads  # noqa: E402


def run(recipe: str, checkpoint: str | None, max_samples: int | None, baseline: bool,
        head: str | None = None) -> dict:
    r = load_recipe(Path(recipe))
    if max_samples:
        r.data.max_samples = max_samples
    if head:
        r.attach.exits = head
    stages: dict[str, float] = {}
    seen: dict = {}
    real_pass, real_train = feature_cache.attach_pass, attach_step.train_exits

    def timed_pass(*a, **k):
        t = time.perf_counter()
        stages["before_pass"] = t - t0
        feats = real_pass(*a, **k)
        stages["backbone_pass"] = time.perf_counter() - t
        seen["feats"] = feats
        return feats

    def timed_train(exits, objective, feats, targets, cfg, on_epoch=None):
        t = time.perf_counter()
        seen["train_args"] = (exits.spec, objective, targets, cfg)
        out = real_train(exits, objective, feats, targets, cfg, on_epoch)
        stages["exit_training"] = time.perf_counter() - t
        seen["epochs"] = len(out["history"])
        return out

    feature_cache.attach_pass, attach_step.train_exits = timed_pass, timed_train
    try:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            result = attach_step.attach(checkpoint or r.checkpoint, r.data, r.attach, Path(tmp) / "artifact")
            total = time.perf_counter() - t0
            report = {
                "recipe": recipe, "exits": r.attach.exits, "examples": result["examples"], "threads": torch.get_num_threads(),
                "load_average": os.getloadavg(), "whole_attach_s": round(total, 2),
                **{f"{k}_s": round(v, 2) for k, v in stages.items()},
                "after_training_s": round(total - sum(stages.values()), 2),
                "epochs_run": seen["epochs"],
                "whole_over_pass": round(total / stages["backbone_pass"], 3),
            }
            if baseline:  # the same training on the same features, on the other thread choice
                spec, objective, targets, cfg = seen["train_args"]
                torch.manual_seed(cfg.seed)
                exits = ExitSet(spec, load_deployed(checkpoint or r.checkpoint).adapter.dims)
                chose = training_threads(cfg, exits)
                other = 1 if chose != 1 else 0
                t = time.perf_counter()
                out = train_exits(exits, build_objective(getattr(objective, "registry_name", r.attach.objective), r.attach.objective_params), seen["feats"],
                                  targets, dataclasses.replace(cfg, threads=other))
                report["training_threads"] = chose or torch.get_num_threads()
                report["baseline_threads"] = other or torch.get_num_threads()
                report["baseline_training_s"] = round(time.perf_counter() - t, 2)
                report["baseline_epochs_run"] = len(out["history"])
                per_epoch = stages["exit_training"] / seen["epochs"]
                report["training_s_per_epoch"] = round(per_epoch, 3)
                report["baseline_s_per_epoch"] = round(report["baseline_training_s"] / report["baseline_epochs_run"], 3)
                report["baseline_over_chosen_per_epoch"] = round(report["baseline_s_per_epoch"] / per_epoch, 3)
                report.update(optimizer_steps(exits, chose))
    finally:
        feature_cache.attach_pass, attach_step.train_exits = real_pass, real_train
    return report


def optimizer_steps(exits: torch.nn.Module, threads: int, steps: int = 200) -> dict:
    """Milliseconds per AdamW update of these exits' parameters: fused (what attach uses), foreach, per tensor."""
    params = [p for p in exits.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    out = {}
    with cpu_threads(threads):
        for name, kw in (("fused", {"fused": True}), ("foreach", {"foreach": True}), ("per_tensor", {"foreach": False})):
            opt = torch.optim.AdamW(params, lr=1e-3, **kw)
            for _ in range(5):
                opt.step()
            t = time.perf_counter()
            for _ in range(steps):
                opt.step()
            out[f"adamw_step_{name}_ms"] = round((time.perf_counter() - t) / steps * 1e3, 3)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="recipes/quickstart.toml")
    ap.add_argument("--checkpoint", default=None, help="Override the recipe's checkpoint.")
    ap.add_argument("--exits", default=None, help="Override the recipe's exit head (e.g. attention: a token-reading head).")
    ap.add_argument("--max-samples", type=int, default=None, help="Cap rows per split (a slice, for smoke runs).")
    ap.add_argument("--no-baseline", action="store_true", help="Skip re-training on the other thread choice.")
    ap.add_argument("--json", default=None, help="Also write the figures here.")
    args = ap.parse_args(argv)
    return show(run(args.recipe, args.checkpoint, args.max_samples, not args.no_baseline, args.exits), args.json)


def show(report: dict, json_path: str | None) -> dict:
    """Print the figures one per line, and write them as JSON if asked (shared by benchmarks/ray_vs_local.py)."""
    for k, v in report.items():
        print(f"{k:40s} {v}")
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
