"""The prepared GPU check (issue 21): early exit against the deployed model as a GPU user would ship it.

    PYTHONPATH=. python benchmarks/gpu_check.py --bundle gpu-bundle --out gpu-check     # on a CUDA host
    PYTHONPATH=. python benchmarks/gpu_check.py --smoke --device cpu --checkpoint CKPT --data DATA   # CPU dry run

The bundle (``benchmarks/gpu_bundle.py``) holds the demo's deployed MiniLM-L6 and
real Rotten Tomatoes texts split as the demo splits them. For each dtype:

1. MiniLM-L6: attach (``--device cuda --dtype D``), calibrate for 2.0x FLOPs on
   validation, score the test split (accuracy, FLOPs speedup), check the runtime
   against that simulation (``parity.runtime_parity``), then time batch 1 and
   batch 64 with CUDA events after warm-up (``device.stopwatch``): early exit,
   the deployed model eager, the deployed model in CUDA graphs (one graph per
   batch size and length bucket of 16 tokens, inputs padded into it) and, for
   ``--compile-dtypes``, under ``torch.compile``. "Shipped" is the faster of
   graphs and compile; the table gives early exit's wall-clock speedup over
   eager and over shipped next to its FLOPs speedup on the same examples.
2. The same timing on a 12-layer BERT-base-shaped model (hidden 768, 12 heads)
   with random weights and the MiniLM tokenizer: exits attached on the real
   texts and calibrated to 2.0x FLOPs. Its accuracy is meaningless (random
   backbone); only its speeds and FLOPs count. Goal: wall >= 0.85 x FLOPs
   speedup at batch 1 and 64.
3. ``benchmarks/serve.py`` with ``eebert serve --device cuda`` (first dtype) at
   1, 16 and 64 clients, early exit vs the deployed model behind the same
   server. Goal: >= 1.7x throughput at 16 clients with equal or better p99.

``--latency-cost`` adds to each model a copy calibrated with ``eebert calibrate --cost latency`` (the
loop timed on the GPU) and times it at batch 1 against eager: does calibrating to the clock keep the
wall clock at the target where the FLOPs calibration loses it?

Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``. ``--budget-s`` skips
stages that would start after that many seconds (recorded as skipped), so one
run ends in time on a lent machine. ``--smoke`` shrinks every size (CPU dry run,
tests/test_benchmarks_smoke.py); on the CPU there are no CUDA graphs, so the
"graphed" runner times the same padded buckets eagerly.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eebert_cli.core.errors import EebertError  # noqa: E402
from eebert_cli.model.artifact import load_artifact, write_json, write_text  # noqa: E402
from eebert_cli.train.attach import attach  # noqa: E402
from eebert_cli.scoring.benchmark import run_benchmark  # noqa: E402
from eebert_cli.scoring.config import CalibrationConfig  # noqa: E402
from eebert_cli.scoring.config import BenchmarkConfig  # noqa: E402
from eebert_cli.train.config import AttachConfig  # noqa: E402
from eebert_cli.data import DataConfig, load_data  # noqa: E402
from eebert_cli.model.device import place_artifact, resolve, stopwatch  # noqa: E402
from eebert_cli.model.device_config import DeviceConfig  # noqa: E402
from eebert_cli.model.features import encode  # noqa: E402
from eebert_cli.steps import calibrate  # noqa: E402
from eebert_cli.scoring.outputs import OutputsCache, split_outputs  # noqa: E402
from eebert_cli.scoring.parity import runtime_parity  # noqa: E402
from eebert_cli.model.runtime import EarlyExitModel  # noqa: E402
from eebert_cli.model.segment_graphs import SegmentGraphs  # noqa: E402
from eebert_cli.train.config import TrainConfig  # noqa: E402

BUCKET = 16          #: CUDA-graph length bucket (tokens): inputs are padded up to a multiple
WALL_GOAL = 0.85     #: wall-clock speedup / FLOPs speedup, 12-layer shape, batch 1 and 64
SERVE_GOAL = 1.7     #: served throughput ratio at 16 clients (with p99 no worse)


class Graphed:
    """The deployed model as a GPU user ships it for small batches: one CUDA graph per (batch, length
    bucket), inputs copied into its static buffers. On the CPU the same padded buckets run eagerly."""

    def __init__(self, hf, device: torch.device, max_length: int):
        self.hf, self.cuda, self.max_length, self.graphs = hf, device.type == "cuda", max_length, {}

    def _static(self, b: int, width: int, types: bool, device):
        z = lambda: torch.zeros(b, width, dtype=torch.long, device=device)  # noqa: E731
        return {"input_ids": z(), "attention_mask": z(), **({"token_type_ids": z()} if types else {})}

    def __call__(self, ids, mask, types):
        b, t = ids.shape
        width = min(-(-t // BUCKET) * BUCKET, max(self.max_length, t))
        key = (b, width, types is not None)
        if key not in self.graphs:
            static = self._static(b, width, types is not None, ids.device)
            graph = out = None
            if self.cuda:
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side), torch.inference_mode():
                    for _ in range(2):  # warm-up off the capture (cuBLAS handles, lazy init)
                        self.hf(**static)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph), torch.inference_mode():
                    out = self.hf(**static).logits
            self.graphs[key] = (static, graph, out)
        static, graph, out = self.graphs[key]
        for name in static:
            static[name].zero_()
        static["input_ids"][:, :t] = ids
        static["attention_mask"][:, :t] = 1 if mask is None else mask
        if types is not None:
            static["token_type_ids"][:, :t] = types
        if graph is None:
            with torch.inference_mode():
                return self.hf(**static).logits
        graph.replay()
        return out


def inputs(enc, idx: list[int], device) -> tuple:
    """Unpadded [1, T] (batch of one) or right-padded tensors for rows ``idx``, on the device."""
    if len(idx) == 1:
        i = idx[0]
        types = enc.token_type_ids
        return (torch.tensor([enc.input_ids[i]], device=device), None,
                torch.tensor([types[i]], device=device) if types else None)
    t = enc.collate(idx)
    return tuple(None if t[k] is None else t[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids"))


def time_runner(fn, batches, device, repeats: int) -> tuple[float, list]:
    """Median seconds over ``repeats`` timed passes through every batch, after one untimed pass."""
    measure = stopwatch(device)
    results = [fn(*b) for b in batches]  # warm-up: graph capture, compile, allocator, clocks
    times = []
    for _ in range(repeats):
        results, seconds = measure(lambda: [fn(*b) for b in batches])
        times.append(seconds)
    return statistics.median(times), results


def timing(model: EarlyExitModel, data, args, dtype: str, started: float) -> dict:
    """Early exit vs deployed eager / graphed / compiled at batch 1 and ``args.batch``."""
    art, dev = model.artifact, model.device
    hf = art.deployed.model
    enc = encode(art.deployed.tokenizer, data.split("test"), art.config["max_length"])
    out = split_outputs(art, data, "test", cache=OutputsCache(art.path / "outputs-cache"))  # FLOPs per exit

    def make(m):
        def run(ids, mask, types):
            with torch.inference_mode():  # outside the compiled module: dynamo sees a plain forward
                return m(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

        return run

    deployed = make(hf)

    def early_exit(ids, mask, types):
        if mask is None:
            logits, k = model.forward_one(ids, types)
            return logits, torch.tensor([k])
        return model.forward_batch(ids, mask, types)

    runners = {"eager": deployed, "graphed": Graphed(hf, dev, art.config["max_length"])}
    if dtype in args.compile_dtypes and time.time() - started < args.budget_s:
        runners["compiled"] = make(torch.compile(hf, dynamic=True))
    n = len(enc)
    result = {}
    for size, count in ((1, args.samples_1), (args.batch, args.batches * args.batch)):
        idx = list(range(min(n, count)))
        groups = [idx[a:a + size] for a in range(0, len(idx), size)]
        batches = [inputs(enc, g, dev) for g in groups]
        row = {"examples": len(idx)}
        ee_s, ee_out = time_runner(early_exit, batches, dev, args.repeats)
        exits = torch.cat([torch.as_tensor(w).cpu().reshape(-1) for _, w in ee_out])
        rows = torch.tensor(idx)
        flops = (out.full[rows].sum() / out.cost[rows, exits].sum()).item()
        row.update(early_exit_ms=1000 * ee_s / len(idx), speedup_flops=flops)
        if size == 1 and args.segment_graphs:  # the opt-in runner: each segment between exits replayed from a graph
            try:
                seg = SegmentGraphs(model)
                s, res = time_runner(lambda ids, mask, types: seg(ids, types), batches, dev, args.repeats)
                agree = sum(int(k) == int(e) for (_, k), e in zip(res, exits.tolist()))
                row["segment_graphs"] = {"ms": 1000 * s / len(idx), "same_exit": agree}
            except Exception as e:  # a stateful criterion, or a capture that fails: recorded, not fatal
                row["segment_graphs"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        ref = [deployed(*b).float() for b in batches]
        for name, fn in runners.items():
            try:
                s, _ = time_runner(fn, batches, dev, args.repeats)
                # read each answer before the next call: a graph's output buffer is reused
                diff = max(((fn(*b).float() - r).abs().max().item() for b, r in zip(batches, ref)), default=0.0)
            except Exception as e:  # a baseline that cannot run here is a result, not a crash
                row[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
                continue
            row[name] = {"ms": 1000 * s / len(idx), "max_logit_diff_vs_eager": diff}
        shipped = [k for k in ("graphed", "compiled") if "ms" in row.get(k, {})]
        best = min(shipped, key=lambda k: row[k]["ms"]) if shipped else None
        row["shipped"] = best
        row["wall_vs_eager"] = row["eager"]["ms"] / row["early_exit_ms"] if "ms" in row["eager"] else None
        row["wall_vs_shipped"] = row[best]["ms"] / row["early_exit_ms"] if best else None
        row["wall_over_flops"] = None if row["wall_vs_eager"] is None else row["wall_vs_eager"] / flops
        if "ms" in row.get("segment_graphs", {}) and "ms" in row["eager"]:
            row["segment_graphs"]["wall_over_flops"] = row["eager"]["ms"] / row["segment_graphs"]["ms"] / flops
        result[str(size)] = row
    return result


def pipeline(name: str, ckpt: str, data_cfg: DataConfig, dtype: str, folder: Path, args, started: float,
             meaningful: bool = True) -> dict:
    dcfg = DeviceConfig(args.device, dtype)
    where = resolve(dcfg)
    t0 = time.time()
    attach(ckpt, data_cfg, AttachConfig(max_length=args.max_length, train=TrainConfig(epochs=args.epochs)), folder,
           device=dcfg, overwrite=True)
    data = load_data(data_cfg)
    art = load_artifact(folder)
    place_artifact(art, where)  # thresholds chosen on the placement the benchmark then runs in
    cal = calibrate(art, data, CalibrationConfig(target_speedup=args.target, bootstrap=args.bootstrap))
    model = EarlyExitModel.from_artifact(folder, device=dcfg)
    rep = run_benchmark(model, data, BenchmarkConfig(split="test", repeats=0),
                        cache=OutputsCache(folder / "outputs-cache"))
    parity = runtime_parity(model, data, "test", batch_size=args.batch, limit=args.parity_rows)
    row = {"model": name, "dtype": dtype, "placement": where.describe(), "layers": model.num_layers,
           "hidden": model.adapter.dims.hidden_size, "accuracy_meaningful": meaningful,
           "accuracy": rep["early_exit"][rep["metric"]], "deployed_accuracy": rep["deployed"][rep["metric"]],
           "speedup_flops_test": rep["early_exit"]["speedup_flops"], "exit_layers": model.exit_layers,
           "validation_speedup": cal.validation["speedup_flops"], "parity": parity,
           "setup_seconds": round(time.time() - t0, 1)}
    row["timing"] = timing(model, data, args, dtype, started)
    if args.latency_cost:
        row["latency_cost"] = latency_calibrated(folder, data, dcfg, args)
    return row


def latency_calibrated(folder: Path, data, dcfg: DeviceConfig, args) -> dict:
    """``--latency-cost``: a copy of the artifact calibrated with ``--cost latency`` (the loop timed on this
    device), early exit vs eager at batch 1 on the same examples; a failure is a result, not a crash."""
    copy = folder.with_name(folder.name + "-latency")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("outputs-cache", ".*"))
    try:
        art = load_artifact(copy)
        place_artifact(art, resolve(dcfg))
        cal = calibrate(art, data, CalibrationConfig(target_speedup=args.target, bootstrap=args.bootstrap,
                                                     cost="latency"))
    except EebertError as e:
        return {"not_measured": e.message}
    model = EarlyExitModel.from_artifact(copy, device=dcfg)
    art, dev = model.artifact, model.device
    enc = encode(art.deployed.tokenizer, data.split("test"), art.config["max_length"])
    out = split_outputs(art, data, "test")
    idx = list(range(min(len(enc), args.samples_1)))
    batches = [inputs(enc, [i], dev) for i in idx]
    ee_s, ee_out = time_runner(lambda ids, mask, types: model.forward_one(ids, types), batches, dev, args.repeats)
    hf = art.deployed.model

    def eager(ids, mask, types):
        with torch.inference_mode():
            return hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits

    eager_s, _ = time_runner(eager, batches, dev, args.repeats)
    exits, rows = torch.tensor([k for _, k in ee_out]), torch.tensor(idx)
    return {"switched_off": cal.validation["switched_off"], "predicted": cal.validation["speedup_latency_model"],
            "validation_speedup_flops": cal.validation["speedup_flops"],
            "speedup_flops": (out.full[rows].sum() / out.cost[rows, exits].sum()).item(),
            "wall_vs_eager": eager_s / ee_s, "early_exit_ms": 1000 * ee_s / len(idx),
            "eager_ms": 1000 * eager_s / len(idx)}


def bert_shape(folder: Path, source: str, layers: int, hidden: int, heads: int) -> Path:
    """A BERT-base-shaped classifier with random weights, the source checkpoint's tokenizer and labels."""
    from transformers import AutoConfig, AutoTokenizer, BertConfig, BertForSequenceClassification

    src = AutoConfig.from_pretrained(source, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, max_position_embeddings=512, num_labels=len(src.id2label),
                     id2label=src.id2label, label2id=src.label2id)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def versions(device: str) -> dict:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    import transformers

    info["transformers"] = transformers.__version__
    return info


def fmt(x, spec=".2f", suffix="") -> str:
    return "-" if x is None else f"{x:{spec}}{suffix}"


def segment(t: dict) -> str:
    s = t.get("segment_graphs")
    if not s:
        return "-"
    if "error" in s:
        return "error"
    return f"{s['ms']:.3f} ({fmt(s.get('wall_over_flops'))}; same exit {s['same_exit']}/{t['examples']})"


def markdown(report: dict) -> str:
    v = report["versions"]
    lines = [f"# GPU check ({'SMOKE RUN, tiny sizes: not a measurement' if report['smoke'] else 'measured'})", "",
             f"Command: `{report['command']}`  ", f"Device: {v.get('gpu', v['device'])}; torch {v['torch']} "
             f"(CUDA {v['cuda']}), transformers {v['transformers']}, Python {v['python']}; "
             f"{report['seconds']:.0f} s in all.", "",
             "| model | dtype | batch | FLOPs speedup | wall vs eager | wall / FLOPs | wall vs shipped | "
             "early exit ms/ex | early exit, segment graphs ms/ex (wall / FLOPs) | eager ms/ex | graphed ms/ex | "
             "compiled ms/ex | accuracy (deployed) | goal |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in report["models"]:
        acc = (f"{100 * m['accuracy']:.2f} ({100 * m['deployed_accuracy']:.2f})" if m["accuracy_meaningful"]
               else "meaningless (random weights)")
        for size, t in m["timing"].items():
            goal = "-"
            # the 12-layer shape's goal, on the better of the two early-exit runtimes (plain, segment graphs)
            best = max([x for x in (t["wall_over_flops"], t.get("segment_graphs", {}).get("wall_over_flops"))
                        if x is not None], default=None)
            if not m["accuracy_meaningful"] and best is not None:
                goal = ("met" if best >= WALL_GOAL else "MISSED") + f" ({best:.2f}, goal >= {WALL_GOAL})"
            ms = lambda k: fmt(t.get(k, {}).get("ms"), ".3f") if "ms" in t.get(k, {}) else (  # noqa: E731
                "error" if k in t else "-")
            lines.append(f"| {m['model']} | {m['dtype']} | {size} | {t['speedup_flops']:.2f}x | "
                         f"{fmt(t['wall_vs_eager'], '.2f', 'x')} | {fmt(t['wall_over_flops'])} | "
                         f"{fmt(t['wall_vs_shipped'], '.2f', 'x')} ({t['shipped'] or 'none'}) | "
                         f"{t['early_exit_ms']:.3f} | {segment(t)} | {ms('eager')} | {ms('graphed')} | "
                         f"{ms('compiled')} | {acc} | "
                         f"{goal} |")
    lat = [m for m in report["models"] if "latency_cost" in m]
    if lat:
        lines += ["", "Latency-calibrated (`eebert calibrate --cost latency`, the loop timed on this device), batch 1, "
                      "early exit vs eager on the same examples:", ""]
        for m in lat:
            c = m["latency_cost"]
            if "not_measured" in c:
                lines.append(f"- {m['model']} {m['dtype']}: not measured ({c['not_measured']})")
                continue
            off = ", ".join(map(str, c["switched_off"])) or "none"
            lines.append(f"- {m['model']} {m['dtype']}: {c['wall_vs_eager']:.2f}x wall (predicted "
                         f"{c['predicted']:.2f}x on validation) at {c['speedup_flops']:.2f}x FLOPs; exits switched "
                         f"off after layers: {off}")
    s = report.get("serve")
    if s and "levels" in s:
        lines += ["", f"`eebert serve --device {s['device']} --dtype {s['dtype']}` (benchmarks/serve.py), "
                      f"{s['model']}:", "",
                  "| clients | early exit req/s | deployed req/s | ratio | early exit p99 ms | deployed p99 ms | goal |",
                  "|---|---|---|---|---|---|---|"]
        for row in s["levels"]:
            e, d = row["early exit"], row["deployed"]
            goal = "-"
            if row["concurrency"] == 16:
                ok = row["throughput_ratio"] >= SERVE_GOAL and e["p99_ms"] <= d["p99_ms"]
                goal = ("met" if ok else "MISSED") + f" (>= {SERVE_GOAL}x, p99 no worse)"
            lines.append(f"| {row['concurrency']} | {e['throughput']:.1f} | {d['throughput']:.1f} | "
                         f"{row['throughput_ratio']:.2f}x | {e['p99_ms']:.1f} | {d['p99_ms']:.1f} | {goal} |")
    elif s:
        lines += ["", f"Serving: {s.get('skipped') or s.get('error')}"]
    if report["skipped"]:
        lines += ["", "Skipped: " + "; ".join(report["skipped"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default="gpu-bundle", help="folder made by benchmarks/gpu_bundle.py")
    ap.add_argument("--checkpoint", help="deployed checkpoint (default BUNDLE/deployed)")
    ap.add_argument("--data", help="data spec with train/validation/test (default BUNDLE/data)")
    ap.add_argument("--out", default="gpu-check")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtypes", default="bfloat16,float16,float32")
    ap.add_argument("--compile-dtypes", default=None,
                    help="dtypes whose deployed model is also compiled (default bfloat16; none with --smoke)")
    ap.add_argument("--bert-dtypes", default="bfloat16", help="dtypes of the 12-layer shape")
    ap.add_argument("--bert-shape", default="12,768,12", help="layers,hidden,heads of the random BERT")
    ap.add_argument("--target", type=float, default=2.0)
    ap.add_argument("--samples-1", type=int, default=300, help="examples timed at batch 1")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=16, help="batches timed at --batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    ap.add_argument("--bootstrap", type=int, default=200)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--max-samples", type=int, default=0, help="keep at most this many rows per split (seeded)")
    ap.add_argument("--parity-rows", type=int, default=500)
    ap.add_argument("--serve-concurrency", default="1,16,64")
    ap.add_argument("--serve-requests", type=int, default=3000)
    ap.add_argument("--serve-duration", type=float, default=15)
    ap.add_argument("--budget-s", type=float, default=420, help="no stage starts after this many seconds")
    ap.add_argument("--no-segment-graphs", dest="segment_graphs", action="store_false",
                    help="skip the early-exit runner that replays each segment from a CUDA graph (batch 1)")
    ap.add_argument("--latency-cost", action="store_true",
                    help="also calibrate a copy of each artifact with --cost latency and time it at batch 1")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (a CPU dry run, not a measurement)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.samples_1, args.batch, args.batches, args.repeats, args.epochs = 6, 4, 2, 1, 2
        args.bootstrap, args.parity_rows, args.serve_requests, args.serve_duration = 10, 24, 8, 5
        args.max_samples = args.max_samples or 160
        args.bert_shape, args.serve_concurrency, args.max_length = "4,32,2", "1,2", min(args.max_length, 64)
    if args.compile_dtypes is None:  # compiling on the CPU takes minutes: a smoke run skips it unless asked
        args.compile_dtypes = "" if args.smoke else "bfloat16"
    args.compile_dtypes = [d for d in args.compile_dtypes.split(",") if d]
    resolve(DeviceConfig(args.device))  # no CUDA here: one line, before any work
    bundle, out = Path(args.bundle), Path(args.out)
    ckpt = args.checkpoint or str(bundle / "deployed")
    data_cfg = DataConfig(spec=args.data or str(bundle / "data"), max_samples=args.max_samples or None)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report = {"command": " ".join(["python benchmarks/gpu_check.py", *(argv or sys.argv[1:])]), "smoke": args.smoke,
              "versions": versions(args.device), "goals": {"wall_over_flops": WALL_GOAL, "serve_ratio_16": SERVE_GOAL},
              "models": [], "skipped": []}

    def stage(label: str, fn):
        if time.time() - started > args.budget_s:
            report["skipped"].append(f"{label} (time budget)")
            return None
        print(f"[{time.time() - started:6.0f} s] {label}", flush=True)
        return fn()

    name = "MiniLM-L6 (demo)" if not args.checkpoint else Path(ckpt).name
    for dtype in [d for d in args.dtypes.split(",") if d]:
        row = stage(f"{name} {dtype}", lambda: pipeline(name, ckpt, data_cfg, dtype,
                                                           out / f"minilm-{dtype}", args, started))
        if row:
            report["models"].append(row)
    layers, hidden, heads = (int(x) for x in args.bert_shape.split(","))
    shape = out / f"bert-{layers}x{hidden}"
    for dtype in [d for d in args.bert_dtypes.split(",") if d]:
        def bert():
            if not (shape / "config.json").is_file():
                bert_shape(shape, ckpt, layers, hidden, heads)
            return pipeline(f"BERT {layers}x{hidden} (random)", str(shape), data_cfg, dtype,
                            out / f"bert{layers}-{dtype}", args, started, meaningful=False)
        row = stage(f"BERT {layers}x{hidden} {dtype}", bert)
        if row:
            report["models"].append(row)
    first = [d for d in args.dtypes.split(",") if d][0]

    def serve():
        import importlib.util

        spec = importlib.util.spec_from_file_location("serve_benchmark", ROOT / "benchmarks" / "serve.py")
        serve_benchmark = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(serve_benchmark)
        levels = serve_benchmark.main([str(out / f"minilm-{first}"), "--concurrency", args.serve_concurrency,
                             "--requests", str(args.serve_requests), "--duration", str(args.serve_duration),
                             "--warmup", "10" if args.smoke else "50", "--max-batch", str(args.batch),
                             "--max-wait-ms", "2", "--device", args.device, "--dtype", first])["levels"]
        return {"model": name, "device": args.device, "dtype": first, "levels": levels}

    report["serve"] = stage("eebert serve", serve) if (out / f"minilm-{first}").is_dir() else {"skipped": "no artifact"}
    report["seconds"] = time.time() - started
    write_json(out / "gpu_check.json", report)
    md = markdown(report)
    write_text(out / "gpu_check.md", md)
    print(md)
    for f in out.glob("*/.*.features"):  # attach caches, if any were kept
        shutil.rmtree(f, ignore_errors=True)
    return report


if __name__ == "__main__":
    main()
