"""Where the time goes on the ONNX Runtime paths: per segment, batch 1 and 32, fp32 and int8.

    PYTHONPATH=. python benchmarks/onnx_profile.py --artifact A [--artifact-int8 B] [--threads 2] \\
        [--samples 200,320] [--repeats 3] [--chain]

A, B as for benchmarks/inference.py (exports made on first use in A/onnx, B/onnx-int8), same
seeded test examples in serving order. Two passes per export and batch size:

1. Wall clock: deployed and early exit alternate on each batch (median of --repeats). Every
   session call is timed from Python, so early exit splits into the calls of each segment and
   "host": everything between calls (the exit decision, dropping the rows that left, trimming
   the padding, writing the outputs).
2. ORT's own profiler (sessions with the same options plus profiling): each call's kernels,
   grouped into embeddings, encoder layers, exit head + score (traced into the segment) and the
   rest (the layers' mask state, the deployed head); "call outside kernels" is the call's
   wall clock from pass 1 minus its kernels from pass 2: binding inputs and outputs, allocation,
   waking the thread pool.

With --chain, a third pass runs every segment in sequence on each batch (all layers, every exit
head, no exit taken) against the deployed graph: what cutting the model into segments costs by
itself, which early exit pays on the segments each example runs. The same chain also runs with its
segments cut (no exit score; no exit at all), so a boundary's cost splits by the clock into the
session switch, the exit head and the exit score; and a session holding one node (the hidden state
passed through) runs beside them, so the switch splits into a session call's own floor and the rest.

With --after-pytorch every timed call follows an untimed PyTorch forward of the deployed model, as
when engines are interleaved call by call: what that costs ONNX Runtime shows as the difference.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eebert_cli.model.cost import full_cost  # noqa: E402
from eebert_cli.data import load_data  # noqa: E402
from inference import flops_speedup  # noqa: E402 - one definition of the FLOPs figure
from eebert_cli.model.features import encode  # noqa: E402
from eebert_cli.deploy.onnx_export import MANIFEST, exit_nodes, export  # noqa: E402
from eebert_cli.deploy.onnx_runtime import OnnxEarlyExit, session  # noqa: E402
from eebert_cli.scoring.outputs import data_config_of  # noqa: E402
from eebert_cli.model.runtime import EarlyExitModel, pad_batch  # noqa: E402

GROUPS = ("embeddings", "encoder layers", "exit head", "exit score", "mask state, deployed head")


def node_groups(path: Path) -> dict[str, str]:
    """Exported node name -> part of the model: by module scope, and for the exit by the graph itself
    (``onnx_export.exit_nodes``)."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    head, score = exit_nodes(g)
    groups = {}
    for n in g.node:
        if "/embeddings/" in n.name:
            groups[n.name] = GROUPS[0]
        elif re.match(r"/(\w+\.)*layers?\.\d+/", n.name):
            groups[n.name] = GROUPS[1]
        elif n.name in score:
            groups[n.name] = GROUPS[3]
        elif n.name in head:
            groups[n.name] = GROUPS[2]
        else:
            groups[n.name] = GROUPS[4]
    return groups


class Timed:
    """An InferenceSession whose run calls record their wall clock (seconds) in ``calls``."""

    def __init__(self, sess):
        self._sess, self.calls = sess, []

    def __getattr__(self, name):
        f = getattr(self._sess, name)
        if not name.startswith("run"):
            return f

        def timed(*a, **k):
            t0 = time.perf_counter()
            r = f(*a, **k)
            self.calls.append(time.perf_counter() - t0)
            return r

        return timed


def instrument(o: OnnxEarlyExit, profile_dir: Path | None, threads: int) -> OnnxEarlyExit:
    """Wrap every session of ``o`` in Timed (after reopening it with ORT's profiler writing into
    ``profile_dir``, when given)."""
    def wrap(sess, file):
        if profile_dir is not None:
            sess = session(o.folder / file, threads, profile_prefix=str(profile_dir / file))
        return Timed(sess)

    o.sessions = [wrap(s, seg["file"]) for s, seg in zip(o.sessions, o.segments)]
    o.deployed = wrap(o.deployed, o.manifest["deployed"])
    return o


def kernels(sess: Timed, graph: Path, skip: int) -> dict:
    """End ORT's profile of ``sess``, its calls after the first ``skip``: microseconds of kernels per
    group and of ``model_run`` (the whole call inside ORT).

    Nodes ORT made by fusion (``BiasGelu``, ``Gelu_token_3``) lose their scope: they count with the
    node run before them, which is in the same part of the model."""
    groups = node_groups(graph)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("name") == "model_run")
    start = runs[skip][0] if skip < len(runs) else float("inf")
    us, last = defaultdict(float), GROUPS[-1]
    for e in sorted((e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                    key=lambda e: e["ts"]):
        last = groups.get(e["name"][:-len("_kernel_time")], last)
        if e["ts"] >= start:
            us[last] += e["dur"]
    us["model_run"] = sum(d for _, d in runs[skip:])
    return us


def batches(enc, types, order, b, pad_id):
    out = []
    for s in range(0, len(order), b):
        idx = order[s:s + b]
        ids, mask, t = pad_batch([enc.input_ids[i] for i in idx], [types[i] for i in idx], pad_id)
        out.append((ids.numpy(), mask.numpy(), t.numpy()))
    return out


def call(o: OnnxEarlyExit, early: bool, b: int, ids, mask, t):
    if not early:
        return o.forward_deployed(ids, mask, t)
    return o.forward_one(ids, t) if b == 1 else o.forward_batch(ids, mask, t)


def timed_pass(o: OnnxEarlyExit, bs, b: int, repeats: int, profile: bool, before=None) -> dict:
    """Deployed and early exit alternate on each batch, ``repeats`` times. Without ``profile``: per
    variant, the median repeat of each batch (its total and its session calls); with ``profile``: sums
    over every repeat, and ORT's profile of each session. ``before(batch)``: run, untimed, before each call."""
    sessions = o.sessions + [o.deployed]
    for x in bs[:max(2, 20 // b)]:  # warm-up, not counted
        call(o, True, b, *x), call(o, False, b, *x)
    skip = [len(s.calls) for s in sessions]
    tot = {v: {"total": 0.0, "calls": [0.0] * len(sessions), "n": [0] * len(sessions)} for v in (False, True)}
    for x in bs:
        runs = defaultdict(list)
        for r in range(repeats):
            for early in ((True, False) if r % 2 else (False, True)):
                if before is not None:
                    before(x)
                seen = [(len(s.calls), sum(s.calls)) for s in sessions]
                t0 = time.perf_counter()
                call(o, early, b, *x)
                sec = time.perf_counter() - t0
                runs[early].append((sec, [sum(s.calls) - w for s, (_, w) in zip(sessions, seen)],
                                    [len(s.calls) - n for s, (n, _) in zip(sessions, seen)]))
        for early, rs in runs.items():
            for sec, calls, n in (rs if profile else [sorted(rs, key=lambda z: z[0])[len(rs) // 2]]):
                tot[early]["total"] += sec
                tot[early]["calls"] = [a + c for a, c in zip(tot[early]["calls"], calls)]
                tot[early]["n"] = [a + c for a, c in zip(tot[early]["n"], n)]
    if profile:
        files = [o.folder / seg["file"] for seg in o.segments] + [o.folder / o.manifest["deployed"]]
        tot["ort"] = [kernels(s, f, k) for s, f, k in zip(sessions, files, skip)]
    return tot


def run_chain(o: OnnxEarlyExit, ids, mask, t, cut=None) -> list[float]:
    """Every segment in order on one batch, whatever the exits decide; seconds per segment call.
    ``cut``: cut_chain's sessions, in place of ``o``'s."""
    feed, secs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": t}, []
    sessions, carry_at = cut if cut is not None else (None, o._carry_at)
    for i in range(len(o.sessions)):
        t0 = time.perf_counter()
        if sessions is None:
            outs = o.run_segment(i, feed)
        else:
            sess, names = sessions[i]
            outs = sess.run(None, {n: feed[n] for n in names})
        secs.append(time.perf_counter() - t0)
        if i == 0:
            feed.update(zip(o.carry, (outs[j] for j in carry_at)))
        feed["hidden_in"] = outs[0]
    return secs


def cut_chain(o: OnnxEarlyExit, drop: tuple[str, ...], threads: int, tmp: Path) -> tuple[list, list[int]]:
    """Each segment but the last cut to its outputs not in ``drop`` (``onnx.utils.Extractor``: the nodes
    only the dropped outputs need go too), under the same session options: (session, input names) per
    segment, and where segment 0's outputs now hold the carried state."""
    import onnx
    from onnx.utils import Extractor

    out = []
    for i, seg in enumerate(o.segments):
        path = o.folder / seg["file"]
        if i < len(o.segments) - 1 and any(d in seg["outputs"] for d in drop):
            model = onnx.load(str(path))  # with its weights (weights.bin beside it)
            keep = [n for n in seg["outputs"] if n not in drop]
            model = Extractor(model).extract_model([x.name for x in model.graph.input], keep)
            path = tmp / f"{'-'.join(drop)}-{seg['file']}"
            onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".bin")
        sess = session(path, threads)
        out.append((sess, [x.name for x in sess.get_inputs()]))
    first = [x.name for x in out[0][0].get_outputs()]
    return out, [first.index(c) for c in o.carry]


def floor_session(threads: int, tmp: Path):
    """A session holding one node (``Identity`` of a hidden state of any shape), under the options every graph
    gets: what a session call costs from Python with next to no work in it (the floor of a switch)."""
    import onnx
    from onnx import TensorProto, helper

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", "seq", "hidden"]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "floor", io[:1], io[1:])
    path = tmp / "floor.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return session(path, threads)


#: the chains chain_pass times beside the deployed graph: what each segment outputs besides its hidden state
CHAINS = {"as exported": (), "no exit score": ("score",), "layers only": ("logits", "score")}


def chain_pass(o: OnnxEarlyExit, bs, repeats: int, threads: int) -> dict:
    """What cutting the model into segments costs by itself: the deployed graph against every segment
    run in sequence (all layers, each exit head evaluated, no exit taken), all alternating on each batch,
    medians of ``repeats``. Early exit pays this on the segments an example runs.

    Timed by the clock, not ORT's profiler (whose per-node cost inflates small kernels), the same chain
    also runs cut: without the exit score's nodes, and without the exit (head and score). Their
    differences split what a boundary costs: "switch" (layers only against deployed: session calls,
    the host between them), "exit head" and "exit score". The "call floor" is one call of ``floor_session``
    on the batch's hidden state, right after the chains: a session call's own cost, part of the switch; and
    the same call made twice in a row, timing the second: what it costs with its code and data cached."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        chains = {k: None if not drop else cut_chain(o, drop, threads, Path(tmp)) for k, drop in CHAINS.items()}
        floor = floor_session(threads, Path(tmp))
        hidden = [o.run_segment(0, {"input_ids": x[0], "attention_mask": x[1], "token_type_ids": x[2]})[0]
                  for x in bs]  # each batch's own hidden state: what a switch hands over
        for x, h in zip(bs[:10], hidden):
            o.forward_deployed(*x)
            for ss in chains.values():
                run_chain(o, *x, cut=ss)
            floor.run(None, {"x": h})
        dep, tot, per, fl = 0.0, dict.fromkeys(chains, 0.0), np.zeros(len(o.sessions)), 0.0
        for j, x in enumerate(bs):
            d, c, f = [], {k: [] for k in chains}, []
            for r in range(repeats):
                names = list(chains) if (j + r) % 2 else list(chains)[::-1]  # no chain always runs first
                t0 = time.perf_counter()
                o.forward_deployed(*x)
                d.append(time.perf_counter() - t0)
                for k in names:
                    c[k].append(run_chain(o, *x, cut=chains[k]))
                t0 = time.perf_counter()
                floor.run(None, {"x": hidden[j]})
                f.append(time.perf_counter() - t0)
            dep += statistics.median(d)
            fl += statistics.median(f)
            for k in chains:
                mid = sorted(c[k], key=sum)[len(c[k]) // 2]
                tot[k] += sum(mid)
                if k == "as exported":
                    per += np.array(mid)
        hot = []  # the same call back to back, its code and data cached: what a call costs warm
        for h in hidden:
            floor.run(None, {"x": h})
            t0 = time.perf_counter()
            floor.run(None, {"x": h})
            hot.append(time.perf_counter() - t0)
    n, bounds = len(bs), max(len(o.sessions) - 1, 1)
    ms = {k: 1000 * v / n for k, v in tot.items()}
    dep_ms = 1000 * dep / n
    boundary = {"switch": (ms["layers only"] - dep_ms) / bounds,
                "exit head": (ms["no exit score"] - ms["layers only"]) / bounds,
                "exit score": (ms["as exported"] - ms["no exit score"]) / bounds}
    return {"deployed_ms": dep_ms, "chain_ms": ms["as exported"], "ratio": tot["as exported"] / dep,
            "segment_ms": [1000 * v / n for v in per], "chains_ms": ms, "boundaries": bounds,
            "per_boundary_ms": boundary, "call_floor_ms": 1000 * fl / n, "call_floor_warm_ms": 1000 * statistics.median(hot)}


def report(name: str, b: int, n: int, segs: list, wall: dict, prof: dict, flops: float, repeats: int) -> dict:
    """Print and return: the speedup and per-segment calls from the wall pass, the parts from the profiled one."""
    dep, ee = wall[False]["total"], wall[True]["total"]
    print(f"\n{name}, batch {b} ({n} examples): deployed {1000 * dep / n:.3f} ms/example, early exit "
          f"{1000 * ee / n:.3f} ({dep / ee:.2f}x; FLOPs {flops:.2f}x, measured/FLOPs {dep / ee / flops:.2f})")
    last = len(segs)  # the deployed session's index
    per = n * repeats * 1e3  # profiled microseconds -> ms per example
    parts = {}
    for early, idx in ((False, [last]), (True, range(last))):
        ort = [prof["ort"][i] for i in idx]
        kern = {g: sum(u.get(g, 0.0) for u in ort) / per for g in GROUPS}
        inside = sum(u["model_run"] for u in ort) / per
        wall_calls = 1e3 * sum(prof[early]["calls"][i] for i in idx) / (n * repeats)
        parts[early] = {**{"in calls: " + g: v for g, v in kern.items()},
                        "in calls: ORT outside kernels (allocation, thread pool)": inside - sum(kern.values()),
                        "in calls: Python binding (inputs, outputs)": wall_calls - inside,
                        "host: decision, regroup, outputs": 1e3 * prof[early]["total"] / (n * repeats) - wall_calls}
    print(f"  {'profiled, ms per example':58s} {'deployed':>9s} {'early exit':>11s}")
    for k in parts[True]:
        print(f"  {k:58s} {parts[False][k]:9.3f} {parts[True][k]:11.3f}")
    print(f"  {'total (profiling on)':58s} {sum(parts[False].values()):9.3f} {sum(parts[True].values()):11.3f}")
    print(f"  {'session':16s} {'layers':>7s} {'calls':>6s} {'ms/call':>8s} {'ms/example':>11s}")
    rows = []
    for i, sname in enumerate([s["file"] for s in segs] + ["deployed.onnx"]):
        v = True if i < last else False
        calls, sec = wall[v]["n"][i], wall[v]["calls"][i]
        lay = "%d-%d" % tuple(segs[i]["layers"]) if i < last else "all"
        rows.append({"session": sname, "layers": lay, "calls": calls, "ms_per_call": 1000 * sec / max(calls, 1),
                     "ms_per_example": 1000 * sec / n})
        print(f"  {sname:16s} {lay:>7s} {calls:6d} {rows[-1]['ms_per_call']:8.3f} {rows[-1]['ms_per_example']:11.3f}")
    return {"deployed_ms": 1000 * dep / n, "early_exit_ms": 1000 * ee / n, "speedup": dep / ee,
            "flops_speedup": flops, "profiled_parts_ms": {"deployed": parts[False], "early exit": parts[True]},
            "sessions": rows}


@torch.inference_mode()
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--artifact-int8", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,32")
    ap.add_argument("--samples", default="200,320", help="timed examples per batch size (seeded subset)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="use only the first N test examples (smoke runs)")
    ap.add_argument("--after-pytorch", action="store_true",
                    help="run the PyTorch deployed model (untimed) before every timed call, as a run that "
                         "interleaves engines call by call does")
    ap.add_argument("--chain", action="store_true",
                    help="also time every segment in sequence against the deployed graph (the segmentation's own cost)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    results = {"threads": a.threads, "after_pytorch": a.after_pytorch}
    for q, art in (("fp32", a.artifact), ("int8", a.artifact_int8)):
        if art is None:
            continue
        folder = Path(art) / ("onnx-int8" if q == "int8" else "onnx")
        if not (folder / MANIFEST).is_file():
            export(art, folder, q if q == "int8" else None)
        m = EarlyExitModel.from_artifact(art)
        split = load_data(data_config_of(m.artifact.config, None)).split("test")
        enc = encode(m.artifact.deployed.tokenizer, split, m.artifact.config["max_length"])
        types = enc.token_type_ids or [[0] * len(x) for x in enc.input_ids]
        n_all = min(len(enc), a.limit) if a.limit else len(enc)
        order = list(range(n_all))
        random.Random(0).shuffle(order)  # the serving order of benchmarks/inference.py
        for b, n in zip([int(x) for x in a.batch_sizes.split(",")], [int(x) for x in a.samples.split(",")]):
            idx = order[:n]
            bs = batches(enc, types, idx, b, enc.pad_id)
            hf = m.artifact.reference.model
            before = (lambda x: hf(input_ids=torch.from_numpy(x[0]), attention_mask=torch.from_numpy(x[1]),
                                   token_type_ids=torch.from_numpy(x[2]))) if a.after_pytorch else None
            o = instrument(OnnxEarlyExit(folder, threads=a.threads), None, a.threads)
            wall = timed_pass(o, bs, b, a.repeats, profile=False, before=before)
            exits = np.concatenate([np.atleast_1d(call(o, True, b, *x)[1]) for x in bs])
            lengths = torch.tensor([len(enc.input_ids[i]) for i in idx])
            flops = flops_speedup(m, lengths, torch.from_numpy(exits), full_cost(m.adapter.dims, lengths))
            with tempfile.TemporaryDirectory(prefix="eebert-ort-profile-") as tmp:  # ORT's profiles: read, then gone
                p = instrument(OnnxEarlyExit(folder, threads=a.threads), Path(tmp), a.threads)
                prof = timed_pass(p, bs, b, a.repeats, profile=True, before=before)
                del p  # every session ended its profile in timed_pass; none writes one after the folder goes
            name = f"onnxrt {q}" + (", each call after a PyTorch forward" if before else "")
            results[f"onnxrt {q} batch {b}"] = report(name, b, len(idx), o.segments, wall, prof, flops, a.repeats)
            if a.chain:
                c = chain_pass(OnnxEarlyExit(folder, threads=a.threads), bs, a.repeats, a.threads)
                results[f"onnxrt {q} batch {b}"]["chain"] = c
                print(f"  every segment in sequence (no exit taken): {c['chain_ms']:.3f} ms a batch against the "
                      f"deployed graph's {c['deployed_ms']:.3f}: {c['ratio']:.3f}x; per segment (ms): "
                      + ", ".join(f"{v:.3f}" for v in c["segment_ms"]))
                print("  the same chain cut (ms a batch): " + ", ".join(f"{k} {v:.3f}" for k, v in c["chains_ms"].items())
                      + f"; per boundary ({c['boundaries']}): "
                      + ", ".join(f"{k} {1000 * v:.1f} us" for k, v in c["per_boundary_ms"].items())
                      + f"; a session call's floor (one Identity node) {1000 * c['call_floor_ms']:.1f} us after the chains, "
                      f"{1000 * c['call_floor_warm_ms']:.1f} us back to back")
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
