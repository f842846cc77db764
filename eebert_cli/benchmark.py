"""Benchmark an early-exit model against its deployed model, honestly.

Accuracy, agreement and FLOPs come from one pass over the whole split (cached
exit outputs, the same arithmetic the runtime uses). Wall clock is measured at
batch size 1 on a seeded subset: warm-up first, then each example timed
``repeats`` times for the deployed model and the early-exit model alternately,
the median counting. Model forward only: tokenisation costs both the same.
"""

from __future__ import annotations

import random
import statistics
import time

import torch

from .calibrate import decide
from .config import BenchmarkConfig
from .cost import embed_flops, layer_flops
from .data import TaskData
from .features import encode
from .pipeline import SplitOutputs, problem_for, split_outputs
from .runtime import EarlyExitModel
from .ui import SILENT, UI


def _rate(pred: torch.Tensor, ref: torch.Tensor | None) -> float | None:
    return None if ref is None else (pred == ref).double().mean().item()


def _percentiles(ms: list[float]) -> dict:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50": q[49], "p90": q[89], "p99": q[98], "mean": statistics.fmean(ms)}


def flops_rows(model: EarlyExitModel, out: SplitOutputs) -> dict:
    """Early exit, static truncation and oracle rows from cached outputs."""
    layers = torch.tensor(model.exit_layers, dtype=torch.float64)
    num_layers = model.num_layers
    problem = problem_for(out, model.criterion)
    e = decide(problem.scores, torch.tensor(model.thresholds, dtype=torch.float64))
    preds = out.logits.argmax(-1)
    pred = preds.gather(1, e[:, None]).squeeze(1)
    full = out.full.sum().item()
    avg_layer = layers[e].mean().item()
    hist = {str(int(l)): int((layers[e] == l).sum()) for l in layers.tolist()}
    early = {
        "accuracy": _rate(pred, out.labels), "agreement": _rate(pred, out.deployed_pred),
        "speedup_flops": full / out.cost.gather(1, e[:, None]).sum().item(),
        "speedup_layers": num_layers / avg_layer, "layers_saved": 1 - avg_layer / num_layers,
        "average_exit_layer": avg_layer, "exit_histogram": hist,
    }
    # Static truncation: every example leaves at the exit nearest the average depth, and
    # only that exit is evaluated.
    k = int(torch.argmin((layers - avg_layer).abs()))
    if k < len(model.layers):
        seq = out.lengths.double()
        dims = model.adapter.dims
        static_cost = (embed_flops(dims, seq) + model.layers[k] * layer_flops(dims, seq)
                       + torch.as_tensor(model.exits.flops(k, seq), dtype=torch.float64))
    else:
        static_cost = out.full
    static = {"layer": int(layers[k]), "accuracy": _rate(preds[:, k], out.labels),
              "agreement": _rate(preds[:, k], out.deployed_pred),
              "speedup_flops": full / static_cost.sum().item()}
    right = preds == out.reference[:, None]
    right[:, -1] = True  # nobody is right anywhere: the deployed head answers
    oe = right.to(torch.uint8).argmax(1)
    opred = preds.gather(1, oe[:, None]).squeeze(1)
    oracle = {"accuracy": _rate(opred, out.labels), "agreement": _rate(opred, out.deployed_pred),
              "speedup_flops": full / out.cost.gather(1, oe[:, None]).sum().item(),
              "average_exit_layer": layers[oe].mean().item()}
    deployed = {"accuracy": _rate(out.deployed_pred, out.labels), "agreement": 1.0, "speedup_flops": 1.0}
    return {"deployed": deployed, "early_exit": early, "static_truncation": static, "oracle": oracle,
            "exit_index": e}


@torch.inference_mode()
def time_batch1(model: EarlyExitModel, data: TaskData, split: str, cfg: BenchmarkConfig, expected: torch.Tensor,
                ui: UI = SILENT) -> dict:
    tok = model.artifact.deployed.tokenizer
    hf = model.artifact.deployed.model
    s = data.split(split)
    idx = list(range(len(s)))
    if cfg.timing_samples and cfg.timing_samples < len(idx):
        idx = sorted(random.Random(0).sample(idx, cfg.timing_samples))
    enc = encode(tok, s.subset(idx), model.artifact.config["max_length"])
    inputs = [(torch.tensor([ids]), torch.tensor([enc.token_type_ids[i]]) if enc.token_type_ids else None)
              for i, ids in enumerate(enc.input_ids)]

    def deployed(ids, types):
        return hf(input_ids=ids, token_type_ids=types).logits

    for ids, types in inputs[: cfg.warmup]:
        deployed(ids, types), model.forward_one(ids, types)
    dep_ms, ee_ms, mismatches = [], [], 0
    clock = time.perf_counter
    with ui.progress(f"timing at batch size 1 ({len(inputs)} examples x {cfg.repeats})", len(inputs)) as advance:
        for n, (ids, types) in enumerate(inputs):
            d, e = [], []
            for r in range(cfg.repeats):
                order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate who goes first
                for which in order:
                    t0 = clock()
                    if which == 0:
                        deployed(ids, types)
                        d.append(clock() - t0)
                    else:
                        _, k = model.forward_one(ids, types)
                        e.append(clock() - t0)
            mismatches += int(k != int(expected[idx[n]]))
            dep_ms.append(1000 * statistics.median(d))
            ee_ms.append(1000 * statistics.median(e))
            advance(1)
    return {
        "examples": len(inputs), "repeats": cfg.repeats, "threads": torch.get_num_threads(),
        "deployed_ms": _percentiles(dep_ms), "early_exit_ms": _percentiles(ee_ms),
        "speedup_measured": sum(dep_ms) / sum(ee_ms),
        "deployed_throughput": 1000 * len(dep_ms) / sum(dep_ms),
        "early_exit_throughput": 1000 * len(ee_ms) / sum(ee_ms),
        "exit_mismatches": mismatches,
    }


def run_benchmark(model: EarlyExitModel, data: TaskData, cfg: BenchmarkConfig, ui: UI = SILENT) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = split_outputs(model.artifact, data, cfg.split, cfg.batch_size, ui)
    rows = flops_rows(model, out)
    e = rows.pop("exit_index")
    timing = time_batch1(model, data, cfg.split, cfg, e, ui) if cfg.timing_samples >= 0 and cfg.repeats > 0 else None
    cal = model.artifact.calibration or {}
    report = {
        "split": cfg.split, "examples": len(out.lengths),
        "metric": "accuracy" if out.labels is not None else "agreement",
        "criterion": cal.get("criterion"), "criterion_params": cal.get("criterion_params"),
        "target_speedup": cal.get("target_speedup"), "max_drop": cal.get("max_drop"),
        "thresholds": cal.get("thresholds"), "exit_layers": model.exit_layers,
        "exits": model.artifact.config["exits"],
        "validation_estimate": cal.get("validation"),
        **rows,
    }
    for key in ("bypass", "leco_search"):  # method details worth seeing next to the figures
        if model.artifact.config.get(key):
            report[key] = model.artifact.config[key]
    if timing:
        report["early_exit"]["speedup_measured"] = timing["speedup_measured"]
        report["early_exit"]["latency_ms"] = timing["early_exit_ms"]
        report["deployed"]["latency_ms"] = timing["deployed_ms"]
        report["deployed"]["speedup_measured"] = 1.0
        report["timing"] = {k: v for k, v in timing.items() if not k.endswith("_ms")}
    val = cal.get("validation") or {}
    if val.get("speedup_flops"):
        report["gaps"] = {
            "test_vs_validation_speedup": rows["early_exit"]["speedup_flops"] / val["speedup_flops"] - 1,
            **({"test_vs_target_speedup": rows["early_exit"]["speedup_flops"] / cal["target_speedup"] - 1}
               if cal.get("target_speedup") else {}),
        }
    return report
