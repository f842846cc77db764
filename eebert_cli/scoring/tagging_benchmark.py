"""`eebert benchmark` for taggers: entity P/R/F1, token accuracy and agreement, FLOPs and the clock.

Rows as for sentence exits (report.py renders them by the task's columns): the deployed
tagger, the early-exit tagger at the calibrated threshold, static truncation at the exit
whose FLOPs speedup is nearest the early-exit one on a log scale (every exit's in
``static_all``), and the oracle (each sentence at the first exit whose tags all equal the
reference's, else at the first exit), as docs/design.md defines them for sentences. The wall clock
times both taggers sentence by sentence (batch size 1, median of ``repeats`` runs) on ``--runtime``
(the PyTorch tagger against the deployed model, or the ONNX tagger against the export's deployed
graph), and the run's exits are checked against the scored ones.
"""

from __future__ import annotations

import math
import random
import statistics

import torch

from .threshold_search import decide
from ..model.calibration import skipped_exits, thresholds_from_json
from ..model.device import machine, placement_of, stopwatch
from .benchmark import speedup_gaps, timing_threads
from .config import BenchmarkConfig
from ..criteria import build_criterion
from ..core.errors import EebertError
from ..core.ui import SILENT, UI
from ..model.tagger_runtime import Tagger
from .tagging import split_tags


def time_taggers(tagger: Tagger, words: list[list[str]], cfg: BenchmarkConfig, expected: list[int], ui: UI) -> dict:
    """Median ms per sentence of the early-exit and the deployed tagger on ``tagger``'s runtime (the
    PyTorch tagger, or ``OnnxTagger`` against the export's deployed graph), ``cfg.timing_batch_size``
    sentences at a time (each leaving at its own exit), on a clock that waits for the device (CUDA events)."""
    from ..data.tagging import encode

    rng = random.Random(0)
    idx = list(range(len(words)))
    if cfg.timing_samples and len(idx) > cfg.timing_samples:
        idx = sorted(rng.sample(idx, cfg.timing_samples))
    sample = [words[i] for i in idx]
    b = cfg.timing_batch_size
    # both clocks start from token ids (tokenising is the same work for both, and outside them, as in the
    # sentence benchmark); the early exit's includes turning logits into tags per word, the deployed one's not
    enc = encode(tagger.deployed.tokenizer, sample, tagger.max_length)
    deployed = tagger.deployed_call(enc["input_ids"], b)
    early = tagger.early_call(enc["input_ids"], enc["word_index"], b)
    device = tagger.input_device if tagger.runs_backbone else torch.device("cpu")  # ONNX Runtime: the CPU
    measure = stopwatch(device)
    if cfg.warmup:  # the first ``warmup`` sentences, untimed, as the sentence benchmark warms up on examples
        warm = encode(tagger.deployed.tokenizer, sample[:cfg.warmup], tagger.max_length)
        measure(tagger.early_call(warm["input_ids"], warm["word_index"], b))
        measure(tagger.deployed_call(warm["input_ids"], b))
    ee, dep = [], []
    with ui.progress(f"timing (batch size {b})", cfg.repeats) as advance:
        for _ in range(cfg.repeats):  # alternate, so drifting load hits both alike
            ee.append(1000 * measure(early)[1] / len(sample))
            dep.append(1000 * measure(deployed)[1] / len(sample))
            advance(1)
    # the runtime against the scored path, one sentence at a time (padding moves borderline scores)
    got = [layer for _, _, layer in tagger.tag_words(sample, batch_size=1)]
    mismatches = sum(g != expected[i] for g, i in zip(got, idx))
    return {"examples": len(sample), "repeats": cfg.repeats, "threads": torch.get_num_threads(), "batch_size": b,
            "device": str(device), "machine": machine(device), "runtime": cfg.runtime,
            **({"ort_pool": cfg.ort_pool} if cfg.runtime == "onnxruntime" else {}),
            "early_exit_ms_per_sentence": statistics.median(ee),
            "deployed_ms_per_sentence": statistics.median(dep),
            "speedup_measured": statistics.median(dep) / statistics.median(ee), "exit_mismatches": mismatches}


def _timed_tagger(artifact, cfg: BenchmarkConfig) -> Tagger:
    """The tagger ``cfg.runtime`` runs, its threads and pool set before any session exists."""
    from ..deploy.runtimes import RUNTIMES

    return RUNTIMES.get(cfg.runtime).tagger(artifact, cfg.onnx_dir, timing_threads(cfg))


def run_tag_benchmark(artifact, data, cfg: BenchmarkConfig, task, ui: UI = SILENT) -> dict:
    cal = artifact.calibration
    if cal is None:
        raise EebertError(f"{artifact.path} is not calibrated yet",
                          f"run `eebert calibrate {artifact.path} --target-speedup 2.0`")
    task.choose_metric(cfg.metric)  # a --metric it cannot lead with: refused, not ignored
    from ..deploy.runtimes import RUNTIMES

    runtime = RUNTIMES.get(cfg.runtime)  # its own figures where it can, timed or not (as for sentences)
    runtime.check(artifact.path, cfg.onnx_dir)  # a stale export fails now, not after the pass
    scored_by = runtime.scored_by(artifact, cfg.onnx_dir)
    st = split_tags(artifact, data, cfg.split, cfg.batch_size, runtime=scored_by, ui=ui)
    crit = build_criterion(cal.criterion, cal.criterion_params, artifact)
    scores = crit.scores(st.logits)[:, :-1]
    thresholds = thresholds_from_json(cal.thresholds)
    e = decide(scores.double(), torch.tensor(thresholds, dtype=torch.float64))
    s, k = st.counts.shape[:2]
    layers = torch.tensor(cal.exit_layers, dtype=torch.float64)
    num_layers = int(layers[-1])
    early = st.figures(e, skip=skipped_exits(thresholds, crit.stateless))  # FLOPs as the runtime spends them
    avg = layers[e].mean().item()
    early.update(average_exit_layer=avg, layers_saved=1 - avg / num_layers, speedup_layers=num_layers / avg,
                 exit_histogram={str(int(l)): int((layers[e] == l).sum()) for l in layers.tolist()})
    static_all = [{"layer": int(layers[j]), **st.figures(torch.full((s,), j, dtype=torch.long), static=True)}
                  for j in range(k)]
    static = min(static_all[:-1], key=lambda r: abs(math.log(r["speedup_flops"] / early["speedup_flops"])))
    ref = st.reference_names
    same = torch.tensor([[st.names[j][i] == ref[i] for j in range(k)] for i in range(s)])
    oe = same.to(torch.uint8).argmax(1)  # the first exit that is right, else the first (wrong either way)
    oracle = {**st.figures(oe), "average_exit_layer": layers[oe].mean().item()}
    report = {
        "split": cfg.split, "examples": s, "words": int(st.words.sum()), "task": task.name,
        "metric": task.report_metric(st.labelled), "headline_metric": "entity_f1" if st.labelled else None,
        "criterion": cal.criterion, "criterion_params": cal.criterion_params,
        "target_speedup": cal.target_speedup, "max_drop": cal.max_drop, "thresholds": cal.thresholds,
        "exit_layers": cal.exit_layers, "exits": artifact.config["exits"],
        "validation_estimate": None, "tagging_validation": cal.validation, "max_drop_margin": cal.margin,
        "calibration_warnings": cal.warnings, "exit_mode": "per-sentence", "quantize": artifact.quantize,
        "scored_by": scored_by, "calibration_runtime": cal.runtime or "pytorch",
        # where the figures' pass ran, and where calibration's did (as in the sentence report)
        "placement": placement_of(artifact.deployed.model).record(), "calibration_placement": cal.placement,
        # the tagger as shipped; on a quantized backbone its last exit is a row of its own (as for sentences)
        "deployed": st.shipped_figures() or static_all[-1],
        **({f"deployed_{artifact.quantize}": static_all[-1]} if st.shipped is not None else {}),
        "early_exit": early, "static_truncation": static, "oracle": oracle, "static_all": static_all,
    }
    gaps = speedup_gaps(early["speedup_flops"], cal.validation, cal.target_speedup)
    if gaps:
        report["gaps"] = gaps
    if cfg.repeats > 0:
        tagger = _timed_tagger(artifact, cfg)
        timing = time_taggers(tagger, data.split(cfg.split).texts, cfg, [int(layers[j]) for j in e.tolist()], ui)
        report["timing"] = timing
        differs = runtime.differs_for(artifact, cfg.onnx_dir)
        if differs:
            ui.log(f"warning: {differs}")
            timing["differs"] = differs
        report["early_exit"]["speedup_measured"] = timing["speedup_measured"]
        report["deployed"]["speedup_measured"] = 1.0
    return report
