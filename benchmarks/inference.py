"""Deployed vs early exit, PyTorch vs ONNX Runtime, fp32 vs int8, batch 1 and 32: side by side.

    PYTHONPATH=. python benchmarks/inference.py --artifact A --artifact-int8 B [--threads 2]

A: an artifact calibrated on the fp32 backbone; B: the same exits calibrated with
``eebert calibrate --quantize int8`` (thresholds fit to the int8 backbone). ONNX
exports are made on first use (A/onnx, B/onnx-int8), and remade when an older eebert
wrote them (export format). Every variant runs in one
process with the same thread count on the same inputs. The timed examples go in
blocks of ``--block`` examples; on each block, engine by engine (PyTorch fp32,
PyTorch int8, ORT fp32, ORT int8), that engine's variants run the block
``--repeats`` times in rotating order, and each batch's median counts, so load
from other processes hits an engine's deployed model and its early exit alike.
A variant runs the whole block at a time, after one untimed call, as in serving,
where one model runs: a call is never timed right after another model's. Another
model's weights evict the caches (ONNX Runtime's deployed graph and segments are
separate copies; the fp32 ones do not fit in L3 together), and PyTorch's OpenMP
threads keep spinning after its forward: a cost on the next call that falls on the
faster variant (docs/inference.md, "Where the time goes on ONNX Runtime"). Besides
each variant's figures (sums of per-batch medians), the early-exit gain is given
per repeat from each repeat's total time, outliers included (min-max): how far
the run's noise moves the gain. Model forward only: tokenisation
and padding happen before the clock starts. Accuracy and exits come from the
whole split (batch 32; per-sample exits give batch-1 answers), FLOPs from the
cost model on each example's own length, for the split and for the timed examples
(a seeded subset, whose FLOPs speedup differs: measured/FLOPs compares the gain
with the timed examples' own). Ratios are against deployed PyTorch fp32 at the
same batch size. Prints a table and writes JSON (--out).

``--compare-artifact A0 [--compare-artifact-int8 B0]``: the same exits calibrated
otherwise (for example with ``eebert calibrate --keep-exits``); each engine's early
exit of A0 / B0 joins that engine's rotation as "early exit (compared)", so the two
calibrations are timed side by side on the same examples in the same window.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from eebert_cli.model.calibration import skipped_exits
from eebert_cli.model.cost import exit_charges, exit_costs, full_cost, skip_exits
from eebert_cli.data import load_data
from eebert_cli.model.features import encode
from eebert_cli.deploy.onnx_export import MANIFEST, ONNX_FORMAT, export
from eebert_cli.deploy.onnx_runtime import OnnxEarlyExit
from eebert_cli.model.checkpoint import gold_labels
from eebert_cli.model.device import machine
from eebert_cli.scoring.outputs import data_config_of
from eebert_cli.model.quantize import quantize_model
from eebert_cli.model.runtime import EarlyExitModel, pad_batch


def percentiles(ms):
    q = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return q[49], q[98]


def flops_speedup(m: EarlyExitModel, lengths: torch.Tensor, exits: torch.Tensor, full: torch.Tensor):
    """FLOPs speedup of the exits taken, by the cost model calibration uses (exit heads and bypasses
    via ``ExitSet.flops``). None with skipping gates: the runtime does not report which layers they
    skipped (``eebert benchmark`` gives the gated figure from its cached pass)."""
    if m.gates is not None:
        return None
    cost = exit_costs(m.adapter.dims, lengths, m.layers, m.exits.flops)
    off = skipped_exits(m.thresholds, m.criterion.stateless)  # the runtime never evaluates these
    if off:
        cost = skip_exits(cost, exit_charges(m.exits.flops, len(m.layers), lengths), off)
    return full.sum().item() / cost.gather(1, exits[:, None]).sum().item()


COMPARED = " (compared)"


def variants(pt: dict, ox: dict, batched: bool, alt_pt: dict | None = None, alt_ox: dict | None = None) -> dict:
    """name -> fn(ids, mask, types) -> (logits, exits or None). Torch tensors in. ``alt_pt`` / ``alt_ox``: the
    compared calibration's models, whose early exit joins its engine as "<engine> early exit (compared)"."""
    v = {}
    for q in pt:
        m = pt[q]
        hf = m.artifact.reference.model  # the model as shipped, even when the artifact trained its own
        v[f"pytorch {q} deployed"] = lambda i, k, t, hf=hf: (hf(input_ids=i, attention_mask=k, token_type_ids=t).logits, None)
        if batched:
            v[f"pytorch {q} early exit"] = lambda i, k, t, m=m: m.forward_batch(i, k, t)
            v[f"pytorch {q} whole-batch exit"] = lambda i, k, t, m=m: m.forward_batch(i, k, t, mode="whole-batch")
        else:
            v[f"pytorch {q} early exit"] = lambda i, k, t, m=m: (lambda r: (r[0], [r[1]]))(m.forward_one(i, t))
    for q in ox:
        o = ox[q]
        v[f"onnxrt {q} deployed"] = lambda i, k, t, o=o: (o.forward_deployed(
            i.numpy(), k.numpy() if k is not None else np.ones_like(i.numpy()), t.numpy()), None)
        if batched:
            v[f"onnxrt {q} early exit"] = lambda i, k, t, o=o: o.forward_batch(i.numpy(), k.numpy(), t.numpy())
            v[f"onnxrt {q} whole-batch exit"] = lambda i, k, t, o=o: o.forward_batch(
                i.numpy(), k.numpy(), t.numpy(), mode="whole-batch")
            if o.fused is not None:  # early exit above runs the fused graph: the Python segment loop beside it
                v[f"onnxrt {q} segment loop"] = lambda i, k, t, o=o: o.forward_batch(
                    i.numpy(), k.numpy(), t.numpy(), loop=True)
        else:
            v[f"onnxrt {q} early exit"] = lambda i, k, t, o=o: (lambda r: (r[0], [r[1]]))(o.forward_one(i.numpy(), t.numpy()))
            if o.fused is not None:  # early exit above runs the fused graph: the Python segment loop beside it
                v[f"onnxrt {q} segment loop"] = lambda i, k, t, o=o: (lambda r: (r[0], [r[1]]))(
                    o.forward_one(i.numpy(), t.numpy(), loop=True))
    if alt_pt or alt_ox:
        other = variants(alt_pt or {}, alt_ox or {}, batched)
        v.update({f"{x}{COMPARED}": fn for x, fn in other.items() if x.endswith(" early exit")})
    return v


def batches_of(enc_ids, types, order, b, pad_id):
    out = []
    for s in range(0, len(order), b):
        idx = order[s:s + b]
        if b == 1:
            i = idx[0]
            out.append((idx, torch.tensor([enc_ids[i]]), None, torch.tensor([types[i]])))
        else:
            out.append((idx, *pad_batch([enc_ids[i] for i in idx], [types[i] for i in idx], pad_id)))
    return out


def load_models(ap, a, fp32_art: str | None, int8_art: str | None) -> tuple[dict, dict]:
    """PyTorch and ONNX Runtime early-exit models of an fp32- and an int8-calibrated artifact (either may be None)."""
    pt = {"fp32": EarlyExitModel.from_artifact(fp32_art)} if fp32_art else {}
    if int8_art:
        pt["int8"] = EarlyExitModel.from_artifact(int8_art)
        if pt["int8"].artifact.calibration.quantize != "int8":
            ap.error(f"{int8_art} is not calibrated on int8: run `eebert calibrate ... --quantize int8`")
        if pt["int8"].artifact.original is not None:  # loading quantized the trained backbone, not the shipped one
            quantize_model(pt["int8"].artifact.original.model, "int8")
    ox = {}
    if not a.no_onnx:
        for q, art in (("fp32", fp32_art), ("int8", int8_art)):
            if art is None:
                continue
            folder = Path(art) / ("onnx-int8" if q == "int8" else "onnx")
            made = json.loads((folder / MANIFEST).read_text()).get("format_version", 1) \
                if (folder / MANIFEST).is_file() else None
            if made is None or made < ONNX_FORMAT:  # none yet, or graphs an older eebert exported
                if made is not None:
                    print(f"re-exporting {folder}: export format {made}, this eebert writes {ONNX_FORMAT}")
                export(art, folder, "int8" if q == "int8" else None)
            ox[q] = OnnxEarlyExit(folder, threads=a.threads, shared_pool=a.ort_shared_pool)
    return pt, ox


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--artifact-int8", default=None)
    ap.add_argument("--compare-artifact", default=None,
                    help="the same exits as --artifact calibrated otherwise: its early exit is timed beside")
    ap.add_argument("--compare-artifact-int8", default=None, help="the same for --artifact-int8")
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--samples", default="300,640", help="timed examples per batch size (seeded subset)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--block", type=int, default=16,
                    help="examples a variant runs at a time (whole batches, at least one), after one untimed call")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--ort-shared-pool", action="store_true",
                    help="every ONNX Runtime session on one process-wide thread pool (spinning; see docs/inference.md)")
    ap.add_argument("--timing-only", action="store_true", help="skip the whole-split accuracy pass (repeat runs)")
    ap.add_argument("--limit", type=int, default=0, help="use only the first N examples (smoke runs)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)

    pt, ox = load_models(ap, a, a.artifact, a.artifact_int8)
    alt_pt, alt_ox = load_models(ap, a, a.compare_artifact, a.compare_artifact_int8) \
        if a.compare_artifact or a.compare_artifact_int8 else ({}, {})
    for q, m in alt_pt.items():
        if q not in pt or m.layers != pt[q].layers:
            ap.error(f"the compared {q} artifact must have the same exits as the timed one: calibrate a copy of it")
    model_of = lambda name: (alt_pt if name.endswith(COMPARED) else pt)[name.split()[1]]  # noqa: E731

    base = pt["fp32"]
    data = load_data(data_config_of(base.artifact.config, None))
    split = data.split(a.split)
    tok = base.artifact.deployed.tokenizer
    enc = encode(tok, split, base.artifact.config["max_length"])
    types = enc.token_type_ids or [[0] * len(x) for x in enc.input_ids]
    labels = gold_labels(base.artifact.deployed, data, a.split)
    n = min(len(enc), a.limit) if a.limit else len(enc)
    labels = labels[:n] if labels is not None else None
    lengths = enc.lengths[:n]
    full = full_cost(base.adapter.dims, lengths)

    # accuracy, exits and FLOPs on the whole split (batch 32, split order)
    every = batches_of(enc.input_ids, types, list(range(n)), 32, enc.pad_id)
    quality, preds_of, exits_of = {}, {}, {}
    for name, fn in variants(pt, ox, True, alt_pt, alt_ox).items():
        if "whole-batch" in name or a.timing_only:
            continue
        preds, exits = np.empty(n, dtype=np.int64), np.full(n, -1, dtype=np.int64)
        for idx, i, k, t in every:
            logits, where = fn(i, k, t)
            logits = logits.numpy() if isinstance(logits, torch.Tensor) else logits
            preds[idx] = logits.argmax(-1)
            if where is not None:
                exits[idx] = np.asarray(where)
        preds_of[name], exits_of[name] = preds, exits
        row = {"accuracy": float((preds == labels.numpy()).mean()) if labels is not None else None}
        if (exits >= 0).all():
            m = model_of(name)
            row["speedup_flops"] = flops_speedup(m, lengths, torch.from_numpy(exits), full)
            row["average_exit_layer"] = float(np.asarray(m.exit_layers)[exits].mean())
        quality[name] = row
    checks = {}
    for q in ox if not a.timing_only else ():
        a_, b_ = f"pytorch {q} early exit", f"onnxrt {q} early exit"
        checks[f"{q}: onnxrt vs pytorch early-exit predictions equal"] = float((preds_of[a_] == preds_of[b_]).mean())
        checks[f"{q}: onnxrt vs pytorch exits equal"] = float((exits_of[a_] == exits_of[b_]).mean())
        if a_ + COMPARED in preds_of and b_ + COMPARED in preds_of:
            a2, b2 = a_ + COMPARED, b_ + COMPARED
            checks[f"{q}: onnxrt vs pytorch early-exit{COMPARED} predictions equal"] = float(
                (preds_of[a2] == preds_of[b2]).mean())
            checks[f"{q}: onnxrt vs pytorch exits{COMPARED} equal"] = float((exits_of[a2] == exits_of[b2]).mean())
        if f"onnxrt {q} segment loop" in preds_of:
            checks[f"{q}: onnxrt fused graph vs segment loop exits equal"] = float(
                (exits_of[b_] == exits_of[f"onnxrt {q} segment loop"]).mean())

    results = {"machine": {**machine(), "threads": a.threads, "ort_shared_pool": a.ort_shared_pool},
               "split": a.split, "examples": n,
               "quality": quality, "checks": checks, "timing": {}}
    rng = random.Random(0)
    order_all = list(range(n))
    rng.shuffle(order_all)  # serving order: no length sorting
    for b, m_ in zip([int(x) for x in a.batch_sizes.split(",")], [int(x) for x in a.samples.split(",")]):
        bs = batches_of(enc.input_ids, types, order_all[:m_], b, enc.pad_id)
        vs = variants(pt, ox, b > 1, alt_pt, alt_ox)
        names = list(vs)
        for _, i, k, t in bs[:max(2, 20 // b)]:
            for fn in vs.values():
                fn(i, k, t)
        ms = {x: [] for x in names}
        spread = {x: [] for x in names}
        repeat_s = {x: [0.0] * a.repeats for x in names}  # each repeat's total: the gain per repeat
        engines = {}  # "pytorch fp32" -> its variants: timed among themselves, never between another engine's calls
        for x in names:
            engines.setdefault(" ".join(x.split()[:2]), []).append(x)
        per_block = max(1, a.block // b)
        timed_exits = {x: {} for x in names if x.endswith(("early exit", COMPARED))}  # batch start -> its exits
        for s0 in range(0, len(bs), per_block):
            block = bs[s0:s0 + per_block]
            runs = {x: [[] for _ in block] for x in names}
            for group in engines.values():
                for r in range(a.repeats):
                    for j in range(len(group)):
                        x = group[(j + r) % len(group)]
                        vs[x](*block[0][1:])  # untimed: the switch from the previous model (caches, threads) costs here
                        for q, (_, i, k, t) in enumerate(block):
                            t0 = time.perf_counter()
                            answer = vs[x](i, k, t)
                            sec = time.perf_counter() - t0
                            if x in timed_exits:
                                timed_exits[x][s0 + q] = np.asarray(answer[1])
                            runs[x][q].append(sec)
                            repeat_s[x][r] += sec
            for x in names:
                for one in runs[x]:
                    med = statistics.median(one)
                    ms[x].append(1000 * med)
                    spread[x].append((max(one) - min(one)) / med)
        ref = sum(ms["pytorch fp32 deployed"])
        rows = {}
        for x in names:
            p50, p99 = percentiles(ms[x])
            rows[x] = {"throughput": 1000 * m_ / sum(ms[x]), "p50_ms": p50, "p99_ms": p99,
                       "speedup_vs_pytorch_fp32_deployed": ref / sum(ms[x]),
                       "repeat_spread_median": statistics.median(spread[x])}
        gains = {}  # early exit over the same engine's deployed model, repeat by repeat
        for eng in engines:
            dep, ee = repeat_s.get(f"{eng} deployed"), repeat_s.get(f"{eng} early exit")
            if dep and ee:
                gains[eng] = [d / e for d, e in zip(dep, ee)]
            other = repeat_s.get(f"{eng} early exit{COMPARED}")
            if dep and other:
                gains[f"{eng}{COMPARED}"] = [d / e for d, e in zip(dep, other)]
        # the FLOPs speedup of the timed examples themselves (a subset: its figure differs from the split's)
        timed_len = torch.tensor([len(enc.input_ids[j]) for idx, *_ in bs for j in idx])
        timed_flops = {}
        for x, got in timed_exits.items():
            exits = torch.from_numpy(np.concatenate([got[q] for q in range(len(bs))]))
            timed_flops[x] = flops_speedup(model_of(x), timed_len, exits, full_cost(base.adapter.dims, timed_len))
        results["timing"][str(b)] = {"examples": m_, "batches": len(bs), "repeats": a.repeats, "block": a.block,
                                     "rows": rows, "gain_per_repeat": gains, "speedup_flops_timed": timed_flops}

    # print
    pool = ", ONNX Runtime on one shared pool" if a.ort_shared_pool else ""
    host = results["machine"]
    print(f"split {a.split} ({n} examples), {a.threads} threads{pool}, torch {torch.__version__}"
          + (f", onnxruntime {host['onnxruntime']}" if "onnxruntime" in host else ""))
    print(f"machine: {host['cpu']}, {host['cpus']} CPUs, caches "
          + (", ".join(f"{k} {v}" for k, v in host["caches"].items()) or "not reported"))
    width = max([32] + [len(x) for t in results["timing"].values() for x in t["rows"]])
    for name, r in quality.items():
        acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
        extra = ""
        if "average_exit_layer" in r:
            fl = "n/a (gates)" if r["speedup_flops"] is None else f"{r['speedup_flops']:.2f}x"
            extra = f"  FLOPs {fl}, avg exit layer {r['average_exit_layer']:.2f}"
        print(f"  {name:{width}s} accuracy {acc}{extra}")
    for k, v in checks.items():
        print(f"  check {k}: {100 * v:.2f}%")
    for b, t in results["timing"].items():
        print(f"\nbatch size {b}: {t['examples']} examples, {t['batches']} batches x {t['repeats']} repeats (median), "
              f"blocks of {t['block']} examples")
        print(f"  {'':{width}s} {'ex/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'vs PT fp32 dep':>14s} {'spread':>7s}")
        for x, r in t["rows"].items():
            print(f"  {x:{width}s} {r['throughput']:8.1f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} "
                  f"{r['speedup_vs_pytorch_fp32_deployed']:13.2f}x {100 * r['repeat_spread_median']:6.1f}%")
        for q in ("fp32", "int8"):
            for eng in ("pytorch", "onnxrt"):
                dep, ee = t["rows"].get(f"{eng} {q} deployed"), t["rows"].get(f"{eng} {q} early exit")
                if dep and ee:
                    sp = dep["p50_ms"] and ee["throughput"] / dep["throughput"]
                    whole = quality.get(f"{eng} {q} early exit", {}).get("speedup_flops")
                    fl = t["speedup_flops_timed"].get(f"{eng} {q} early exit") or float("nan")
                    split_fl = f" (split {whole:.2f}x)" if whole else ""
                    wb = t["rows"].get(f"{eng} {q} whole-batch exit")
                    wbs = f", whole-batch {wb['throughput'] / dep['throughput']:.2f}x" if wb else ""
                    sl = t["rows"].get(f"{eng} {q} segment loop")
                    wbs += f", segment loop {sl['throughput'] / dep['throughput']:.2f}x" if sl else ""
                    g = t["gain_per_repeat"][f"{eng} {q}"]
                    print(f"  {eng} {q}: early exit {sp:.2f}x vs its deployed (repeat totals {min(g):.2f}-{max(g):.2f}x)"
                          f"{wbs}; FLOPs of the timed examples {fl:.2f}x{split_fl}; measured/FLOPs {sp / fl:.2f}")
                    alt = t["rows"].get(f"{eng} {q} early exit{COMPARED}")
                    if alt:
                        g = t["gain_per_repeat"][f"{eng} {q}{COMPARED}"]
                        sp2 = alt["throughput"] / dep["throughput"]
                        fl2 = t["speedup_flops_timed"].get(f"{eng} {q} early exit{COMPARED}") or float("nan")
                        print(f"  {eng} {q}: early exit{COMPARED} {sp2:.2f}x vs its deployed (repeat totals "
                              f"{min(g):.2f}-{max(g):.2f}x); FLOPs of the timed examples {fl2:.2f}x; "
                              f"measured/FLOPs {sp2 / fl2:.2f}; early exit / compared {sp / sp2:.3f}")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
