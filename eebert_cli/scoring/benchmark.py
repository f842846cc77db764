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

import torch

from .config import SEEN_SPLITS, BenchmarkConfig
from .baselines import oracle_exits, static_costs, static_exit
from ..model.device import machine, placement_of, stopwatch
from .curves import report_curves
from ..data import TaskData
from ..model.features import encode
from .operating_point import skip_stats
from .outputs import OutputsCache, SplitOutputs, problem_for, split_outputs
from ..model.runtime import EarlyExitModel, pad_batch
from ..deploy.onnx_runtime import use_shared_pool
from ..deploy.runtimes import RUNTIMES, runtime_for
from ..core.ui import SILENT, UI


def _percentiles(ms: list[float]) -> dict:
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {"p50": q[49], "p90": q[89], "p99": q[98], "mean": statistics.fmean(ms)}


def flops_rows(model: EarlyExitModel, out: SplitOutputs) -> dict:
    """Early exit, static truncation and oracle rows from cached outputs; the task names each row's figures."""
    task = out.task
    layers = torch.tensor(model.exit_layers, dtype=torch.float64)
    num_layers = model.num_layers
    problem = problem_for(out, model.criterion, model.exits)
    outcome = problem.outcome(torch.tensor(model.thresholds, dtype=torch.float64))  # FLOPs the runtime spends
    e = outcome.exits
    preds = task.answers(out.logits)  # [N, K] class ids or values, or [N, K, C] label sets
    every = torch.arange(len(e))
    pred = preds[every, e]
    full = out.full.sum().item()
    avg_layer = layers[e].mean().item()
    hist = {str(int(l)): int((layers[e] == l).sum()) for l in layers.tolist()}
    run = avg_layer
    if out.skipped is not None:  # gates: layers actually run, not the exit's depth, set the speed
        gates = skip_stats(out.skipped, layers[e].long(), model.exits.gates.layers)
        run = gates["average_layers_run"]

    def row(p: torch.Tensor, **extra) -> dict:
        return {**task.row(p, out.labels, out.deployed_pred), **extra}

    early = row(pred, speedup_flops=outcome.speedup,
                speedup_layers=num_layers / run, layers_saved=1 - run / num_layers,
                average_exit_layer=avg_layer, exit_histogram=hist)
    if out.skipped is not None:
        early["gates"] = gates
    # baselines.py defines both: static truncation at about the early-exit model's FLOPs, the oracle
    dims = model.adapter.dims
    k, static_speedup = static_exit(out, model.exits, dims, early["speedup_flops"])
    static = row(preds[:, k], layer=int(layers[k]), speedup_flops=static_speedup)
    oe = oracle_exits(task.right(out.logits, out.reference))
    oracle = row(preds[every, oe], speedup_flops=full / out.cost.gather(1, oe[:, None]).sum().item(),
                 average_exit_layer=layers[oe].mean().item())
    rows = {"deployed": row(out.deployed_pred, speedup_flops=1.0)}
    if model.artifact.quantize:  # the quantized deployed model is a row of its own; the reference stays fp32
        rows[f"deployed_{model.artifact.quantize}"] = row(
            preds[:, -1], speedup_flops=full / static_costs(out, model.exits, dims)[-1].item())
    return {**rows, "early_exit": early, "static_truncation": static, "oracle": oracle, "exit_index": e}


@torch.inference_mode()
def time_batch1(model: EarlyExitModel, data: TaskData, split: str, cfg: BenchmarkConfig, expected: torch.Tensor,
                ui: UI = SILENT) -> dict:
    tok = model.artifact.deployed.tokenizer
    hf = model.artifact.reference.model  # the model as shipped, even when the artifact trained its own
    s = data.split(split)
    idx = list(range(len(s)))
    if cfg.timing_samples and cfg.timing_samples < len(idx):
        idx = sorted(random.Random(0).sample(idx, cfg.timing_samples))
    enc = encode(tok, s.subset(idx), model.artifact.config["max_length"])
    dev = model.device
    inputs = [(torch.tensor([ids], device=dev),
               torch.tensor([enc.token_type_ids[i]], device=dev) if enc.token_type_ids else None)
              for i, ids in enumerate(enc.input_ids)]

    def deployed(ids, types):
        return hf(input_ids=ids, token_type_ids=types).logits

    for ids, types in inputs[: cfg.warmup]:
        deployed(ids, types), model.forward_one(ids, types)
    dep_ms, ee_ms, mismatches = [], [], 0
    measure = stopwatch(dev)  # CUDA: events around the work, synchronised (device.py)
    with ui.progress(f"timing at batch size 1 ({len(inputs)} examples x {cfg.repeats})", len(inputs)) as advance:
        for n, (ids, types) in enumerate(inputs):
            d, e = [], []
            for r in range(cfg.repeats):
                order = (0, 1) if r % 2 == 0 else (1, 0)  # alternate who goes first
                for which in order:
                    if which == 0:
                        d.append(measure(lambda: deployed(ids, types))[1])
                    else:
                        (_, k), seconds = measure(lambda: model.forward_one(ids, types))
                        e.append(seconds)
            mismatches += int(k != int(expected[idx[n]]))
            dep_ms.append(1000 * statistics.median(d))
            ee_ms.append(1000 * statistics.median(e))
            advance(1)
    return {
        "examples": len(inputs), "repeats": cfg.repeats, "threads": torch.get_num_threads(), "device": str(dev),
        "machine": machine(dev), "deployed_ms": _percentiles(dep_ms), "early_exit_ms": _percentiles(ee_ms),
        "speedup_measured": sum(dep_ms) / sum(ee_ms),
        "deployed_throughput": 1000 * len(dep_ms) / sum(dep_ms),
        "early_exit_throughput": 1000 * len(ee_ms) / sum(ee_ms),
        "exit_mismatches": mismatches,
    }


def _timing_inputs(model: EarlyExitModel, data: TaskData, split: str, cfg: BenchmarkConfig):
    """The seeded timing subset, in split order, cut into batches of ``cfg.timing_batch_size``."""
    s = data.split(split)
    idx = list(range(len(s)))
    if cfg.timing_samples and cfg.timing_samples < len(idx):
        idx = sorted(random.Random(0).sample(idx, cfg.timing_samples))
    tok = model.artifact.deployed.tokenizer
    enc = encode(tok, s.subset(idx), model.artifact.config["max_length"])
    types = enc.token_type_ids or [[0] * len(x) for x in enc.input_ids]
    b = max(1, cfg.timing_batch_size)
    dev = torch.device("cpu") if RUNTIMES.get(cfg.runtime).host_inputs else model.device  # onnxruntime: host arrays
    batches = []
    for i in range(0, len(idx), b):
        if b == 1:
            ids = torch.tensor(enc.input_ids[i:i + 1], device=dev)
            batches.append((idx[i:i + 1], ids, None, torch.tensor(types[i:i + 1], device=dev)))
        else:
            batches.append((idx[i:i + b], *(t.to(dev) for t in
                                            pad_batch(enc.input_ids[i:i + b], types[i:i + b], enc.pad_id))))
    return batches


def timing_threads(cfg: BenchmarkConfig) -> int:
    """Set the timing's threads (and ONNX Runtime's pool, before any session exists, so that deployed and
    early exit share it) for sentences and taggers alike; the thread count the runtime gets."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.ort_pool == "shared":
        use_shared_pool(torch.get_num_threads())
    return torch.get_num_threads()


def _runtime_fns(model: EarlyExitModel, cfg: BenchmarkConfig) -> dict:
    """name -> fn(ids, mask, types) -> exit indices, for the deployed model and each early-exit mode."""
    rt = runtime_for(cfg.runtime, model.artifact, model, cfg.onnx_dir, timing_threads(cfg))
    fns = {"deployed": rt.deployed}
    if cfg.timing_batch_size > 1:
        fns["early_exit"] = lambda i, m, t: [int(k) for k in rt.early_exit(i, m, t)[1]]
        fns["whole_batch"] = lambda i, m, t: [int(k) for k in rt.early_exit(i, m, t, mode="whole-batch")[1]]
    else:
        fns["early_exit"] = lambda i, m, t: list(rt.early_exit(i, None, t)[1])
    return fns


@torch.inference_mode()
def time_runtime(model: EarlyExitModel, data: TaskData, split: str, cfg: BenchmarkConfig, expected: torch.Tensor,
                ui: UI = SILENT) -> dict:
    """Deployed vs early exit (and, in batches, whole-batch exiting) timed alternately, batch by batch.

    Each batch runs ``repeats`` times per variant, the variants' order rotating
    between repeats; the median counts. Model forward only (tokenisation and
    padding are done before timing, the same for every variant).
    """
    batches = _timing_inputs(model, data, split, cfg)
    fns = _runtime_fns(model, cfg)
    names = list(fns)
    for _, ids, mask, types in batches[: max(1, cfg.warmup // max(1, cfg.timing_batch_size))]:
        for f in fns.values():
            f(ids, mask, types)
    ms: dict[str, list[float]] = {n: [] for n in names}
    mismatches = 0
    # where the clock ran: the inputs' device (ONNX Runtime takes host arrays and runs on the CPU)
    where = batches[0][1].device if batches else torch.device("cpu")
    measure = stopwatch(where)
    n_ex = sum(len(b[0]) for b in batches)
    with ui.progress(f"timing {cfg.runtime} at batch size {cfg.timing_batch_size} ({n_ex} examples x "
                     f"{cfg.repeats})", len(batches)) as advance:
        for rows, ids, mask, types in batches:
            runs: dict[str, list[float]] = {n: [] for n in names}
            for r in range(cfg.repeats):
                for j in range(len(names)):
                    name = names[(j + r) % len(names)]  # rotate who goes first
                    got, seconds = measure(lambda: fns[name](ids, mask, types))
                    runs[name].append(seconds)
                    if name == "early_exit" and r == 0:
                        mismatches += sum(int(g != int(expected[i])) for g, i in zip(got, rows))
            for n in names:
                ms[n].append(1000 * statistics.median(runs[n]))
            advance(1)
    dep = sum(ms["deployed"])
    result = {
        "runtime": cfg.runtime, **({"ort_pool": cfg.ort_pool} if cfg.runtime == "onnxruntime" else {}),
        "batch_size": cfg.timing_batch_size, "examples": n_ex, "batches": len(batches), "repeats": cfg.repeats,
        "threads": torch.get_num_threads(), "device": str(where), "machine": machine(where),
        "deployed_ms": _percentiles(ms["deployed"]), "early_exit_ms": _percentiles(ms["early_exit"]),
        "speedup_measured": dep / sum(ms["early_exit"]),
        "deployed_throughput": 1000 * n_ex / dep,
        "early_exit_throughput": 1000 * n_ex / sum(ms["early_exit"]),
        "exit_mismatches": mismatches,
    }
    if "whole_batch" in ms:
        result.update({"whole_batch_ms": _percentiles(ms["whole_batch"]),
                       "whole_batch_speedup": dep / sum(ms["whole_batch"]),
                       "whole_batch_throughput": 1000 * n_ex / sum(ms["whole_batch"])})
    return result


def run_benchmark(model: EarlyExitModel, data: TaskData, cfg: BenchmarkConfig, ui: UI = SILENT,
                  cache: OutputsCache | None = None, curves: bool = True) -> dict:
    if cfg.threads:  # the backbone pass too runs on the timing's threads
        torch.set_num_threads(cfg.threads)
    runtime = RUNTIMES.get(cfg.runtime)
    runtime.check(model.artifact.path, cfg.onnx_dir)  # a stale export fails now, not after the pass
    scored_by = runtime.scored_by(model.artifact, cfg.onnx_dir)  # the figures are the timed runtime's own where it can
    out = split_outputs(model.artifact, data, cfg.split, cfg.batch_size, ui, cache=cache, runtime=scored_by)
    rows = flops_rows(model, out)
    e = rows.pop("exit_index")
    timed = cfg.repeats > 0  # repeats = 0: accuracy and FLOPs only
    if timed and (cfg.runtime != "pytorch" or cfg.timing_batch_size > 1):
        timing = time_runtime(model, data, cfg.split, cfg, e, ui)
    else:
        timing = time_batch1(model, data, cfg.split, cfg, e, ui) if timed else None
    cal = model.artifact.calibration.to_dict() if model.artifact.calibration is not None else {}
    report = {
        "split": cfg.split, "examples": len(out.lengths),
        "metric": out.task.report_metric(out.labels is not None),
        # the metric to read first (--metric; default by task), named as in the rows (macro_f1, ...)
        "headline_metric": out.task.choose_metric(cfg.metric or None).replace("-", "_") if out.labels is not None else None,
        "task": out.task.name,
        "criterion": cal.get("criterion"), "criterion_params": cal.get("criterion_params"),
        "target_speedup": cal.get("target_speedup"), "max_drop": cal.get("max_drop"),
        "thresholds": cal.get("thresholds"), "exit_layers": model.exit_layers,
        "exits": model.artifact.config["exits"],
        "validation_estimate": cal.get("validation"),
        "validation_ci_method": cal.get("ci_method"),
        "max_drop_margin": cal.get("margin"),
        "quantize": model.artifact.quantize,
        # whose outputs the rows score, and whose outputs the thresholds were chosen on
        "scored_by": scored_by, "calibration_runtime": cal.get("runtime") or "pytorch",
        # where this report's scores were computed, and where its thresholds were chosen
        "placement": placement_of(model.adapter.model).record(), "calibration_placement": cal.get("placement"),
        "calibration_warnings": cal.get("warnings", []),
        "calibration_cost": (cal.get("cost") or {}).get("model", "flops"),  # what the target speedup counted
        **rows,
    }
    metric = report["metric"]
    if curves:  # every criterion's sweep over the split: the report's picture, the benchmark's slowest part
        report["curves"] = report_curves(model, out, cfg.split, {"speedup": rows["early_exit"]["speedup_flops"],
                                                                 "accuracy": rows["early_exit"][metric]}, cal)
    for key in ("bypass", "leco_search", "gates"):  # method details worth seeing next to the figures
        if model.artifact.config.get(key):
            report[key] = model.artifact.config[key]
    if timing:
        report["early_exit"]["speedup_measured"] = timing["speedup_measured"]
        report["early_exit"]["latency_ms"] = timing["early_exit_ms"]
        report["deployed"]["latency_ms"] = timing["deployed_ms"]
        report["deployed"]["speedup_measured"] = 1.0
        report["timing"] = {k: v for k, v in timing.items() if not k.endswith("_ms")}
        differs = runtime.differs_for(model.artifact, cfg.onnx_dir)  # whichever path timed it, batch 1 included
        if differs:
            ui.log(f"warning: {differs}")
            report["timing"]["differs"] = differs
        if "whole_batch_ms" in timing:
            report["timing"]["whole_batch_ms"] = timing["whole_batch_ms"]
    # a latency-model target is not a FLOPs figure: the test's FLOPs are held to validation's alone
    target = None if cal.get("cost") else cal.get("target_speedup")
    gaps = speedup_gaps(rows["early_exit"]["speedup_flops"], cal.get("validation"), target)
    if gaps:
        report["gaps"] = gaps
    return report


def warn_on_a_seen_split(report: dict, ui: UI) -> None:
    """A benchmark on a split eebert fitted something on (``SEEN_SPLITS``) is allowed, a check against the
    validation estimate, but is never to be read as a result: the report and the console say so."""
    seen = SEEN_SPLITS.get(report["split"])
    if seen:
        report["split_warning"] = (f"benchmarked on the {report['split']} split, {seen}: its figures flatter early "
                                   "exit; the test split is the one to report")
        ui.log(f"warning: {report['split_warning']}")


def speedup_gaps(test_speedup: float, validation: dict | None, target: float | None) -> dict:
    """How the test FLOPs speedup differs from validation's and from the target (relative), or {}: does the
    calibration hold on unseen data (``[expect] max_speedup_gap``)."""
    if not (validation or {}).get("speedup_flops"):
        return {}
    return {"test_vs_validation_speedup": test_speedup / validation["speedup_flops"] - 1,
            **({"test_vs_target_speedup": test_speedup / target - 1} if target else {})}
