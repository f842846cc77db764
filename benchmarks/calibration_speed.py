"""How long the threshold search takes on 10,000 validation examples x 12 exits (synthetic).

    PYTHONPATH=$PWD python benchmarks/calibration_speed.py [--n 10000] [--exits 12]

Calibration works on exit outputs cached once (scores, correctness, costs), so
its cost is independent of the backbone; the issue asks for seconds at this
size. Prints the wall time of each mode and of the bootstrap; wall time depends
on the machine and its load (run it on a quiet machine to quote it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eebert_cli.scoring.threshold_search import (Problem, bootstrap, rank_within_budget, search,  # noqa: E402
                                                 search_switching_off, switching_off)
from eebert_cli.criteria import build_criterion  # noqa: E402


def synthetic(n: int, k: int, seed: int = 0):
    """Logits of k exits (the last the deployed head) that sharpen with depth; gold labels; costs."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    difficulty = torch.rand(n, generator=g)
    depth = torch.linspace(0.2, 1.0, k)
    signal = (1.5 - difficulty[:, None]) * depth[None, :] * 3
    noise = torch.randn(n, k, generator=g)
    margin = signal + noise
    logits = torch.stack([-margin / 2, margin / 2], -1)
    logits = torch.where(labels[:, None, None] == 1, logits, logits.flip(-1))
    lengths = torch.randint(8, 128, (n,), generator=g).double()
    cost = lengths[:, None] * torch.arange(1, k + 1, dtype=torch.float64)[None, :]
    charges = 0.003 * lengths[:, None].expand(n, k - 1)  # an exit head: a fraction of a percent of a layer
    return logits, labels, cost, cost[:, -1].clone(), charges


def synthetic_problem(crit, logits, correct, cost, full, charges) -> Problem:
    """A stateless criterion's problem charges each exit evaluated (so exits can be switched off, as the
    runtime skips them); a stateful one sees every exit, charged or not, so its costs stay the layers'."""
    scores = crit.scores(logits)[:, :-1]
    if not crit.stateless:
        return Problem(scores, correct, cost, full)
    charged = cost + torch.cat([charges, charges[:, -1:]], 1).cumsum(1)
    return Problem(scores, correct, charged, full, charges, stateless=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--exits", type=int, default=12, help="exits including the deployed head")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (0 = torch's default); the search's tensors are small, so one thread "
                         "is as fast on a quiet machine and far faster on a busy one")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logits, labels, cost, full, charges = synthetic(args.n, args.exits)
    correct = logits.argmax(-1) == labels[:, None]
    print(f"{args.n} examples x {args.exits} exits, torch threads {torch.get_num_threads()}")
    print(f"{'criterion':10s} {'mode':16s} {'seconds':>8s} {'speedup':>8s} {'accuracy':>9s}")
    for name in ("entropy", "patience", "dge", "cobee"):
        crit = build_criterion(name)
        t0 = time.perf_counter()
        problem = synthetic_problem(crit, logits, correct, cost, full, charges)
        t_scores = time.perf_counter() - t0
        ref = correct[:, -1].double().mean().item()
        for mode, goal in (("target", 2.0), ("drop", ref - 0.01)):
            t0 = time.perf_counter()
            thr, _ = search(problem, crit, mode, goal)
            secs = time.perf_counter() - t0
            o = problem.outcome(thr)
            what = "target 2.0x" if mode == "target" else "max drop 1 pt"
            print(f"{name:10s} {what:16s} {secs:8.2f} {o.speedup:7.2f}x {100 * o.accuracy:9.2f}")
        if crit.stateless:  # the default searches: exits that add nothing switched off (docs/criteria.md)
            def drop_pruned():
                (thr, _), p = switching_off(problem, lambda q: search(q, crit, "drop", ref - 0.01), rank_within_budget)
                return thr, p

            pruned = {"target, pruned": lambda: search_switching_off(problem, crit, 2.0, ties="evaluations")[::2],
                      "drop, pruned": drop_pruned}  # each: (thresholds, the problem with the exits switched off)
            for what, run in pruned.items():
                t0 = time.perf_counter()
                thr_off, p_off = run()
                secs = time.perf_counter() - t0
                o, n_off = p_off.outcome(thr_off), len(p_off.off)
                print(f"{name:10s} {what:16s} {secs:8.2f} {o.speedup:7.2f}x {100 * o.accuracy:9.2f}"
                      f"   ({n_off} exit{'s' if n_off != 1 else ''} switched off)")
        t0 = time.perf_counter()
        bootstrap(problem, thr, 200)
        print(f"{name:10s} {'scores':16s} {t_scores:8.2f}   (computing all exits' scores)")
        print(f"{name:10s} {'bootstrap x200':16s} {time.perf_counter() - t0:8.2f}")


if __name__ == "__main__":
    main()
