"""Where the time goes at batch size 1: the early-exit loop vs the deployed model's HF forward.

    PYTHONPATH=. python benchmarks/batch1_profile.py --artifact A [--samples 100] [--threads 1]

Prints, per example: operator calls (torch.profiler, machine independent) and
wall-clock time of (a) the deployed model's own forward, (b) the early-exit
loop, (c) the loop evaluating every exit as before (exits calibrated "never"
included), plus the top operators of each by self CPU time, and a cProfile
of the Python side. Variants alternate per example; the median counts.

Then the early-exit loop split by timers around its parts: encoder layers, and exits
(head, score and decision), per example and per call. An exit costs more inside the
loop than alone: it runs right after a layer has streamed its weights through the
caches (docs/inference.md, "Sixth pass").
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inference import flops_speedup  # noqa: E402 - one definition of the FLOPs figure
from eebert_cli.model.cost import full_cost  # noqa: E402
from eebert_cli.data import load_data  # noqa: E402
from eebert_cli.model.features import encode  # noqa: E402
from eebert_cli.scoring.outputs import data_config_of  # noqa: E402
from eebert_cli.model.runtime import EarlyExitModel  # noqa: E402


def split_loop(m: EarlyExitModel, inputs, repeats: int) -> dict[str, tuple[float, float]]:
    """Time ``forward_one``'s encoder layers and its exits (head + score + decision) from inside the
    loop, by wrapping them on this instance: part -> (us per example, us per call)."""
    spent, calls = {"layers": 0.0, "exits": 0.0}, {"layers": 0, "exits": 0}

    def timed(part, fn, done=None, count=True):
        def run(*args):
            t0 = time.perf_counter()
            out = fn(*args)
            if done is not None:
                done(out)
            spent[part] += time.perf_counter() - t0
            calls[part] += count
            return out
        return run

    ad, ex, crit = m.adapter, m.exits, m.criterion
    ad.layer = timed("layers", ad.layer)
    # an exit: its head (one call counted), then its score and the decision (the one host sync)
    ex.logits = timed("exits", ex.logits)
    crit.observe = timed("exits", crit.observe, done=lambda out: out[0].item(), count=False)
    try:
        total = 0.0
        for _ in range(repeats):
            for i, t in inputs:
                t0 = time.perf_counter()
                m.forward_one(i, t)
                total += time.perf_counter() - t0
    finally:
        del ad.layer, ex.logits, crit.observe
    n = len(inputs) * repeats
    out = {part: (1e6 * spent[part] / n, 1e6 * spent[part] / max(1, calls[part])) for part in spent}
    out["the rest (embeddings, Python)"] = (1e6 * (total - sum(spent.values())) / n, float("nan"))
    return out


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    m = EarlyExitModel.from_artifact(a.artifact)
    s = load_data(data_config_of(m.artifact.config, None)).split("test")
    idx = sorted(random.Random(0).sample(range(len(s)), min(a.samples, len(s))))
    enc = encode(m.artifact.deployed.tokenizer, s.subset(idx), m.artifact.config["max_length"])
    types = enc.token_type_ids or [[0] * len(x) for x in enc.input_ids]
    inputs = [(torch.tensor([i]), torch.tensor([t])) for i, t in zip(enc.input_ids, types)]
    hf = m.artifact.reference.model  # the model as shipped, even when the artifact trained its own

    every = EarlyExitModel(m.artifact, m.criterion, m.thresholds)
    every._plan = lambda: [(k, l, t) for k, (l, t) in enumerate(zip(every.layers, every.thresholds))]
    fns = {"deployed (HF forward)": lambda i, t: hf(input_ids=i, token_type_ids=t),
           "early exit": m.forward_one,
           "early exit, every exit evaluated": every.forward_one}
    for i, t in inputs[:10]:
        for f in fns.values():
            f(i, t)
    ms = {k: [] for k in fns}
    for i, t in inputs:
        runs = {k: [] for k in fns}
        for r in range(a.repeats):
            names = list(fns)[r % 3:] + list(fns)[:r % 3]
            for k in names:
                t0 = time.perf_counter()
                fns[k](i, t)
                runs[k].append(time.perf_counter() - t0)
        for k in fns:
            ms[k].append(1000 * statistics.median(runs[k]))
    ref = sum(ms["deployed (HF forward)"])
    lengths = torch.tensor([len(x) for x in enc.input_ids])
    exits = torch.tensor([m.forward_one(i, t)[1] for i, t in inputs])
    flops = flops_speedup(m, lengths, exits, full_cost(m.adapter.dims, lengths))
    print(f"{len(inputs)} test examples, {a.threads} threads, median of {a.repeats}; FLOPs speedup of these examples "
          + (f"{flops:.2f}x" if flops is not None else "not known (skipping gates)"))
    for k, f in fns.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for i, t in inputs:
                f(i, t)
        ev = prof.key_averages()
        top = sorted(ev, key=lambda e: e.self_cpu_time_total, reverse=True)[:6]
        n_ops = sum(e.count for e in ev if e.key.startswith("aten::"))
        print(f"\n{k}: {sum(ms[k]) / len(inputs):.2f} ms/example, speedup {ref / sum(ms[k]):.2f}x, "
              f"{n_ops / len(inputs):.0f} aten calls/example (nested included)")
        for e in top:
            print(f"    {e.key:40s} {e.count / len(inputs):6.1f}/ex  self {e.self_cpu_time_total / 1000 / len(inputs):.3f} ms/ex")
    split = split_loop(m, inputs, a.repeats)
    print(f"\nearly-exit loop split (timers around its parts; mean of {len(inputs)} examples x {a.repeats}):")
    for part, (per_ex, per_call) in split.items():
        print(f"    {part:32s} {per_ex:8.1f} us/example  {per_call:7.1f} us/call")
    pr = cProfile.Profile()
    pr.enable()
    for i, t in inputs:
        m.forward_one(i, t)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(12)
    print("\ncProfile of the early-exit loop (tottime):\n" + "\n".join(buf.getvalue().splitlines()[6:22]))


if __name__ == "__main__":
    main()
