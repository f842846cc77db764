"""The baselines every table compares early exiting with, each defined once.

Static truncation: every example leaves at one exit k, and only that exit's head
is evaluated (skipping gates, if the artifact has them, still skip on the way).
In a report row it is the exit whose static FLOPs speedup is nearest, on a log
scale, to the early-exit model's FLOPs speedup on the same split: the fixed-depth
model of about the same cost. Curves draw every exit's point.

Oracle: every example leaves at the first exit whose answer is right (for a
regressor: no worse than the deployed head's); when none is, at the first exit
(wrong either way, so the cheapest). It is the best any criterion could do with
these exits; `curves.oracle_curve` extends it to more speed.

`benchmark`, `regression`, `curves` and `compare` (through `benchmark`) all use
these functions.
"""

from __future__ import annotations

import math

import torch

from ..model.cost import encoder_flops, head_flops


def static_costs(outputs, exits, dims) -> torch.Tensor:
    """[K] total FLOPs when every example leaves at exit k, the deployed head (on the exits' path) last."""
    seq = outputs.lengths.double()
    reach = encoder_flops(dims, seq, outputs.skipped, exits.gates)
    cols = [(reach[:, layer] + torch.as_tensor(exits.flops(k, seq), dtype=torch.float64)).sum()
            for k, layer in enumerate(exits.layers)]
    cols.append((reach[:, dims.num_layers] + head_flops(dims)).sum())
    return torch.stack(cols)


def static_exit(outputs, exits, dims, speedup: float) -> tuple[int, float]:
    """(exit index, its static FLOPs speedup) nearest ``speedup`` on a log scale."""
    spd = outputs.full.sum().item() / static_costs(outputs, exits, dims)
    k = int(torch.argmin((spd.log() - math.log(max(speedup, 1e-12))).abs()))
    return k, spd[k].item()


def oracle_exits(right: torch.Tensor) -> torch.Tensor:
    """[N] the first exit that is right per example ([N, K] bool), else exit 0."""
    any_right = right.any(1)
    first = right.to(torch.uint8).argmax(1)
    return torch.where(any_right, first, torch.zeros_like(first))
