"""Run the MPNet-12 case: attach once, then calibrate and benchmark at 1.5x, 2x and 3x.

The backbone passes over validation and test are made once and shared by the
three operating points through the on-disk outputs cache (`eebert_cli.scoring.outputs.
OutputsCache`, in ARTIFACT/outputs-cache, keyed by exit weights, split contents
and backbone hash), so the sweep costs one pass per split on a slow CPU. Each point's report is saved as report-<X>x.json/.md in the
artifact; a summary table goes to results.md.

    python examples/mpnet12/run.py recipes/mpnet12-r8.toml
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from eebert_cli.model.artifact import load_artifact, write_json, write_text
from eebert_cli.train.attach import attach
from eebert_cli.model.device import place_artifact, resolve
from eebert_cli.scoring.benchmark import run_benchmark
from eebert_cli.steps import calibrate
from eebert_cli.scoring.outputs import OutputsCache
from eebert_cli.data import load_data
from eebert_cli.recipe import load_recipe
from eebert_cli.scoring.report import markdown
from eebert_cli.model.runtime import EarlyExitModel
from eebert_cli.core.ui import UI


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", nargs="?", default="recipes/mpnet12-r8.toml")
    ap.add_argument("--targets", default="1.5,2.0,3.0")
    ap.add_argument("--skip-attach", action="store_true", help="reuse the artifact already attached")
    args = ap.parse_args()
    r = load_recipe(Path(args.recipe))
    ui = UI()
    where = resolve(r.device)  # the recipe's [device] (auto: CUDA in bf16/fp16 where present)
    data = load_data(r.data)
    if not args.skip_attach:
        ui.log(f"[bold]attach[/] {r.checkpoint} -> {r.artifact}")
        print(json.dumps(attach(r.checkpoint, r.data, r.attach, r.artifact, ui, device=r.device), indent=2))

    cache = OutputsCache(Path(r.artifact) / "outputs-cache")
    rows = []
    targets = [float(t) for t in args.targets.split(",")]
    for t in targets:
        art = load_artifact(r.artifact)
        place_artifact(art, where)  # calibrated on the device and dtype the benchmark below runs in
        cal = calibrate(art, data, replace(r.calibrate, target_speedup=t, max_drop=None), ui, cache=cache).to_dict()
        # batch-1 wall clock only at 2.0x (it re-runs the model example by example)
        bcfg = r.benchmark if t == 2.0 else replace(r.benchmark, repeats=0)
        model = EarlyExitModel.from_artifact(r.artifact, device=r.device)
        rep = run_benchmark(model, data, bcfg, ui, cache=cache)
        folder = Path(r.artifact)
        write_json(folder / f"report-{t}x.json", rep)
        write_text(folder / f"report-{t}x.md", markdown(rep))
        write_json(folder / f"calibration-{t}x.json", cal)
        ee, dep, st, orc = rep["early_exit"], rep["deployed"], rep["static_truncation"], rep["oracle"]
        rows.append((t, cal["validation"]["speedup_flops"], ee["speedup_flops"], 100 * ee["accuracy"],
                     100 * dep["accuracy"], 100 * ee["macro_f1"], 100 * dep["macro_f1"], 100 * st["accuracy"],
                     st["layer"], st["speedup_flops"], ee["average_exit_layer"],
                     ee.get("speedup_measured")))
        print(f"target {t}x: test {ee['speedup_flops']:.2f}x, accuracy {100 * ee['accuracy']:.2f} "
              f"(deployed {100 * dep['accuracy']:.2f}), macro-F1 {100 * ee['macro_f1']:.2f} "
              f"(deployed {100 * dep['macro_f1']:.2f}), oracle {orc['speedup_flops']:.2f}x", flush=True)
    head = ("| target | validation speedup | test FLOPs speedup | accuracy % | deployed accuracy % | macro-F1 % | "
            "deployed macro-F1 % | static truncation accuracy % (layer, speedup) | avg exit layer | "
            "measured speedup (batch 1) |")
    lines = [head, "|" + "---|" * 10]
    for (t, vs, ts, acc, dacc, f1, df1, sacc, sl, ss, avg, meas) in rows:
        lines.append(f"| {t:.1f}x | {vs:.2f}x | {ts:.2f}x | {acc:.2f} | {dacc:.2f} | {f1:.2f} | {df1:.2f} | "
                     f"{sacc:.2f} ({sl}, {ss:.2f}x) | {avg:.2f} | {'-' if meas is None else f'{meas:.2f}x'} |")
    write_text(Path(r.artifact) / "results.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
