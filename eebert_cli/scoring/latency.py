"""Latency cost model: what the early-exit loop costs on the clock of one device, at batch size 1.

The FLOPs model (``model/cost.py``) charges an exit head its arithmetic, a fraction of a percent of a
layer. On a CPU at batch size 1 an exit costs what it moves and what each of its ops costs to start:
10-30% of a layer was measured (docs/inference.md, sixth and seventh passes), so an exit that seldom
fires can cost more than it saves. This model times the runtime's own loop on the calibration device
and splits it into parts, each a function of the input length T (seconds): embeddings, one encoder
layer, one exit (head, score and decision) and the deployed head. Calibration (``calibrate --cost
latency``) then charges every example these parts along its path, and may switch off exits that do
not pay for themselves.

How: for three input lengths (the validation lengths' 10th, 50th and 90th percentiles), the runtime's
batch-1 loop is timed along K + 1 paths (leave at each exit, every exit evaluated and none firing, no
exit evaluated: the deployed model), each path a known count of layers, exits and heads; least squares
gives the four parts at that length (none below zero); between the lengths they are interpolated. The
early-exit paths are timed in turn, the deployed model in a block of its own (see ``measure``).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass

import torch

from ..core.errors import EebertError
from ..core.ui import SILENT, UI
from ..deploy.onnx_scratch import FIRES, SCORED, check_exportable
from ..model.calibration import INF
from ..model.device import machine, stopwatch

PARTS = ("embed", "layer", "exit", "head")


@dataclass
class LatencyProfile:
    """Seconds of each part at batch size 1, measured at ``lengths`` (``measured[part][i]`` at ``lengths[i]``);
    between them linear, outside them the nearest measured value (a line through three noisy points
    extrapolates badly)."""

    lengths: list[int]
    measured: dict[str, list[float]]
    repeats: int
    machine: dict
    runtime: str = "pytorch"  #: the loop that was timed (``PATH_RUNNERS``)

    def at(self, part: str, seq: torch.Tensor) -> torch.Tensor:
        x = torch.tensor(self.lengths, dtype=torch.float64)
        y = torch.tensor(self.measured[part], dtype=torch.float64)
        s = seq.double().clamp(x[0].item(), x[-1].item())
        if len(x) == 1:
            return y.expand(len(s)).clone()
        i = torch.clamp(torch.searchsorted(x, s, right=True) - 1, 0, len(x) - 2)
        w = (s - x[i]) / (x[i + 1] - x[i])
        return y[i] + w * (y[i + 1] - y[i])

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self, at: int) -> str:
        t = torch.tensor([float(at)])
        layer, ex = self.at("layer", t).item(), self.at("exit", t).item()
        return (f"at {at} tokens a layer takes {1e6 * layer:.0f} us and an exit {1e6 * ex:.0f} us "
                f"({ex / layer:.0%} of a layer)" if layer > 0 else f"at {at} tokens a layer measured no time")


def nonnegative_parts(design: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Least squares with every part >= 0: a part fitted below zero (noise) is fixed at zero and the
    others are fitted again."""
    free = list(range(design.shape[1]))
    x = torch.zeros(design.shape[1], dtype=torch.float64)
    while free:
        sol = torch.linalg.lstsq(design[:, free], y[:, None]).solution.squeeze(1)
        if bool((sol >= 0).all()):
            x[free] = sol
            break
        free = [f for f, v in zip(free, sol.tolist()) if v >= 0] if bool((sol > 0).any()) else []
    return x


def check_latency_spec(exits: dict, criterion, runtime: str = "pytorch") -> None:
    """What the latency model cannot time, read from an artifact's exit spec (its config's ``exits``: nothing
    needs to load) and an unbound ``criterion``."""
    if runtime not in PATH_RUNNERS:
        raise EebertError(f"--cost latency cannot time the {runtime} runtime's loop",
                          f"add --latency-runtime, one of {', '.join(PATH_RUNNERS)}")
    if not criterion.stateless:
        raise EebertError(f"--cost latency times a stateless criterion; {criterion.registry_name} keeps state "
                          "across exits", "calibrate it with --cost flops, or choose a stateless criterion")
    if exits.get("gates") or exits.get("bypass"):
        raise EebertError("--cost latency times plain exits; this artifact's skipping gates or bypasses change "
                          "each layer's cost", "calibrate it with --cost flops")
    if len(exits["layers"]) < 2:
        raise EebertError("--cost latency needs at least two exits to tell an exit's time from a layer's",
                          "calibrate with --cost flops, or attach exits at more layers")


def check_latency(artifact, criterion, runtime: str = "pytorch") -> None:
    """What the latency model cannot time on the loaded ``artifact``, refused before any backbone work: its
    spec's checks, and for ONNX Runtime what the exporter takes of its exits."""
    check_latency_spec(artifact.exits.spec.to_dict(), criterion, runtime)
    if runtime == "onnxruntime":
        check_exportable(artifact, criterion, "--latency-runtime onnxruntime", "time it with --latency-runtime pytorch")


def lengths_to_time(lengths: torch.Tensor) -> list[int]:
    """The 10th, 50th and 90th percentiles of the validation lengths (distinct, at least 2 tokens)."""
    q = torch.quantile(lengths.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    picked = sorted({max(2, int(round(v))) for v in q.tolist()})
    if len(picked) == 1:  # every text about as long: a second length to interpolate towards
        picked.append(picked[0] * 2)
    return picked


def _paths(num_exits: int, exit_layers: list[int], num_layers: int) -> list[tuple[list[float], list[int]]]:
    """(thresholds, [embeds, layers, exits, heads]) of the timed paths."""
    out = []
    for k in range(num_exits):  # leave at exit k, the earlier ones scored and passed
        out.append(([SCORED] * k + [FIRES] + [SCORED] * (num_exits - k - 1), [1, exit_layers[k], k + 1, 0]))
    out.append(([SCORED] * num_exits, [1, num_layers, num_exits, 1]))  # every exit scored, none fires
    out.append(([-INF] * num_exits, [1, num_layers, 0, 1]))  # no exit evaluated: the deployed path
    return out


class _PyTorchPaths:
    """The PyTorch loop (``runtime.EarlyExitModel``) along each path, on the artifact's device."""

    def __init__(self, artifact, criterion, paths):
        from ..model.runtime import EarlyExitModel

        self.models = [EarlyExitModel(artifact, criterion, thr) for thr, _ in paths]
        self.device = self.models[0].device

    def inputs(self, ids: torch.Tensor):
        return ids.to(self.device)

    def runner(self, i: int, ids):
        m = self.models[i]
        return lambda: m.forward_one(ids)

    def close(self) -> None:
        pass


class _OnnxPaths:
    """ONNX Runtime's segment loop along each path, on a scratch export with every exit live
    (``deploy/onnx_scratch.py``); the path with no exit is its deployed graph, as the benchmark times it."""

    def __init__(self, artifact, criterion, paths):
        from ..deploy.onnx_scratch import ScratchExport

        self.scratch = ScratchExport(artifact, criterion, threads=torch.get_num_threads())
        self.ox = self.scratch.ox
        self.thresholds = [thr for thr, _ in paths]
        self.device = torch.device("cpu")

    def inputs(self, ids: torch.Tensor):
        import numpy as np

        i = ids.numpy().astype(np.int64)
        return i, np.zeros_like(i), np.ones_like(i)  # ids, token types, mask

    def runner(self, i: int, ids):
        one, types, mask = ids
        thr = self.thresholds[i]
        if all(t == -INF for t in thr):  # no exit evaluated: the deployed graph
            return lambda: self.ox.forward_deployed(one, mask, types)

        def run():
            self.ox.thresholds = thr + [INF]
            return self.ox.forward_one(one, types, loop=True)  # the fused graph has the export's thresholds
        return run

    def close(self) -> None:
        self.scratch.close()


#: what ``--latency-runtime`` names: how each path is run
PATH_RUNNERS = {"pytorch": _PyTorchPaths, "onnxruntime": _OnnxPaths}


@torch.inference_mode()
def measure(artifact, criterion, lengths: torch.Tensor, repeats: int = 20, warmup: int = 3,
            clock=None, runtime: str = "pytorch", ui: UI = SILENT) -> LatencyProfile:
    """Time the runtime's batch-1 loop (``runtime``: a key of ``PATH_RUNNERS``); see the module docstring.

    ``criterion`` must be stateless (it decides each exit alone): a path with no exit evaluated does not
    exist for a stateful one. The early-exit paths are timed in turns (one repeat of each, then the next),
    so that a machine slowing down part-way slows them alike; each path's time is its median."""
    check_latency(artifact, criterion, runtime)
    layers, num_layers = artifact.exits.layers, artifact.deployed.adapter.dims.num_layers
    paths = _paths(len(layers), layers, num_layers)
    target = PATH_RUNNERS[runtime](artifact, criterion, paths)
    try:
        clock = clock or stopwatch(target.device)
        vocab = int(getattr(artifact.deployed.model.config, "vocab_size", 1000))
        gen = torch.Generator().manual_seed(0)
        chosen = lengths_to_time(lengths)
        fitted: dict[str, list[float]] = {p: [] for p in PARTS}
        noisy = False
        design = torch.tensor([counts for _, counts in paths], dtype=torch.float64)
        # a step per round of the early-exit paths, and one for the deployed model's repeats, per length
        with ui.progress(f"timing the batch-1 loop ({runtime})", len(chosen) * (warmup + repeats + 1)) as advance:
            for seq in chosen:
                ids = target.inputs(torch.randint(min(1000, vocab - 1), vocab, (1, seq), generator=gen))
                runs = [target.runner(i, ids) for i in range(len(paths))]
                times: list[list[float]] = [[] for _ in paths]
                for r in range(warmup + repeats):
                    # the early-exit paths in turn, as a stream of examples mixes them (ONNX Runtime's segments
                    # are sessions whose state goes cold between calls); the deployed model on its own, as it
                    # serves (its graph holds its own copy of the weights: called right after the segments it
                    # would start cold)
                    for i, fn in enumerate(runs[:-1]):
                        _, s = clock(fn)
                        if r >= warmup:
                            times[i].append(s)
                    advance(1)
                runs[-1]()
                for r in range(repeats):
                    times[-1].append(clock(runs[-1])[1])
                advance(1)
                y = torch.tensor([statistics.median(t) for t in times], dtype=torch.float64)
                parts = nonnegative_parts(design, y)
                if parts[1] < 0.01 * y[-1]:  # a layer under 1% of the deployed path: noise swamped the layers
                    noisy = True
                for p, v in zip(PARTS, parts.tolist()):
                    fitted[p].append(v)
    finally:
        target.close()
    if noisy:
        raise EebertError("timing the loop was too noisy to tell a layer's time from the rest (a busy machine?)",
                          "calibrate again on a quiet machine, or with --cost flops")
    return LatencyProfile(lengths=chosen, measured=fitted, repeats=repeats, machine=machine(target.device),
                          runtime=runtime)


def latency_costs(profile: LatencyProfile, lengths: torch.Tensor, exit_layers: list[int],
                  num_layers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cost [N, K], full [N], charges [N, K-1]) in seconds: leaving at each exit (the deployed head last),
    the deployed model alone, and what evaluating each trainable exit adds to every later path."""
    seq = lengths.double()
    embed, layer, ex, head = (profile.at(p, seq) for p in PARTS)
    cols = [embed + layer * l + ex * (k + 1) for k, l in enumerate(exit_layers)]
    cols.append(embed + layer * num_layers + ex * len(exit_layers) + head)
    full = embed + layer * num_layers + head
    return torch.stack(cols, 1), full, ex[:, None].expand(-1, len(exit_layers)).clone()
