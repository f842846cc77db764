"""Render benchmark reports: report.json, report.md and a rich table."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from ..model.artifact import CALIBRATION, check_derivation, derivation, file_sha256, read_json, write_json, write_text
from ..core.errors import EebertError
from ..core.plot import curves_svg
from ..tasks import get as get_task

CURVES_SVG = "curves.svg"

ROWS = (("deployed", "deployed"), ("early_exit", "early exit"),
        ("static_truncation", "static"), ("oracle", "oracle"))


def _pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def _x(x):
    return "-" if x is None else f"{x:.2f}x"


def rows_of(report: dict) -> list[str]:
    """Row keys in table order; a quantized deployed model (``deployed_int8``) follows the fp32 reference."""
    keys = [k for k, _ in ROWS]
    return keys[:1] + [k for k in report if k.startswith("deployed_") and isinstance(report[k], dict)
                       and "speedup_flops" in report[k]] + keys[1:]


def _num(x):
    return "-" if x is None else f"{x:.4f}"


def _header(report: dict) -> list[str]:
    """The row name, the task's figure columns, then speed and latency."""
    return [""] + [h for h, _, _ in get_task(report.get("task")).columns] + ["FLOPs x", "wall x", "p50 ms", "p99 ms"]


def _row(report: dict, key: str) -> list[str]:
    r = report[key]
    lat = r.get("latency_ms") or {}
    name = dict(ROWS).get(key) or key.replace("deployed_", "deployed ")
    if key == "static_truncation":
        name += f" (L{r['layer']})"
    figures = [(_pct if kind == "pct" else _num)(r.get(k)) for _, k, kind in get_task(report.get("task")).columns]
    return [name, *figures, _x(r.get("speedup_flops")), _x(r.get("speedup_measured")),
            f"{lat['p50']:.2f}" if lat else "-", f"{lat['p99']:.2f}" if lat else "-"]


def table(report: dict) -> Table:
    crit = report.get("criterion")
    t = Table(title=f"eebert benchmark on {report['split']} ({report['examples']} examples), "
                    f"criterion {crit}, target {report.get('target_speedup') or '-'}")
    for h in _header(report):
        h = "F1 %" if h == "macro-F1 %" else h  # narrow terminals; report.md keeps the full name
        t.add_column(h, justify="left" if not h else "right")
    for key in rows_of(report):
        t.add_row(*_row(report, key))
    return t


def _switched_off(val: dict, per: str) -> str:
    off = val["switched_off"]
    return (f"Exit{'s' if len(off) > 1 else ''} after layer{'s' if len(off) > 1 else ''} {', '.join(map(str, off))} "
            f"switched off (the runtime never evaluates {'them' if len(off) > 1 else 'it'}); "
            f"{val['exits_evaluated']:.2f} exits evaluated per {per}.")


def markdown(report: dict) -> str:
    ee = report["early_exit"]
    lines = ["# eebert report", "",
             f"Split `{report['split']}` ({report['examples']} examples); criterion `{report.get('criterion')}`; "
             f"target speedup {report.get('target_speedup') or '-'}; exits `{report['exits']['type']}` after layers "
             f"{report['exits']['layers']}.", "",
             "| " + " | ".join(_header(report)) + " |", "|" + "---|" * len(_header(report))]
    lines += ["| " + " | ".join(_row(report, key)) + " |" for key in rows_of(report)]
    lines += ["", f"Average exit layer {ee['average_exit_layer']:.2f} of {report['exit_layers'][-1]} "
                  f"({100 * ee['layers_saved']:.1f}% of layers saved, {ee['speedup_layers']:.2f}x in layers). "
                  "FLOPs count embeddings, every layer run and every exit head evaluated.", "",
              "Exit histogram (layer: examples): " + ", ".join(f"{k}: {v}" for k, v in ee["exit_histogram"].items())]
    if report.get("leco_search"):
        lines += ["", "LECO search, architecture per layer: " + ", ".join(
            f"{l}: {c}" for l, c in report["leco_search"]["choices"].items())]
    if report.get("bypass"):
        b = report["bypass"]
        lines += ["", f"BADGE bypasses: {b['blocks']} blocks of {b['block_size']} layers, width {b['width']}; "
                      f"{100 * b['overhead_per_layer']:.2f}% of one layer's FLOPs per exit evaluated (128 tokens)."]
    if report.get("gates"):
        g, run = report["gates"], ee.get("gates") or {}
        trained = g["config"].get("train_backbone")
        lines += ["", f"SmartBERT skipping gates before layers {report['exits']['gates']['layers']}: on this split "
                      f"{100 * run.get('skip_rate', 0):.1f}% of the gated layers reached were skipped, "
                      f"{run.get('average_layers_run', 0):.2f} layers run per example on average. "
                      + ("The backbone was trained with the gates; its weights are in the artifact "
                         "(`backbone.safetensors`) and the deployed row is the shipped model."
                         if trained else "Backbone frozen: later layers read states they were not trained on.")]
    val = report.get("validation_estimate")
    if val:
        lines += ["", f"Calibration estimate on validation: {val['speedup_flops']:.2f}x "
                      f"(95% CI at the chosen thresholds {val['speedup_ci95'][0]:.2f}-{val['speedup_ci95'][1]:.2f})."]
        m = report["metric"]
        if val.get(f"{m}_ci95") and val.get(m) is not None:
            lo, hi = val[f"{m}_ci95"]
            lines[-1] = lines[-1][:-1] + (f", {m} {100 * val[m]:.2f}% (95% CI at the chosen thresholds "
                                          f"{100 * lo:.2f}-{100 * hi:.2f}).")
        if val.get("speedup_latency_model"):
            lines[-1] += (f" Calibrated on the latency cost model (`--cost latency`): "
                          f"{val['speedup_latency_model']:.2f}x estimated at batch size 1 on the calibration machine.")
        if val.get("switched_off"):  # never evaluated: a histogram's empty layers are not an accident
            lines[-1] += " " + _switched_off(val, "example")
    tagged = report.get("tagging_validation") or {}
    if not val and tagged.get("switched_off"):
        lines += ["", _switched_off(tagged, "sentence on validation")]
    margin = report.get("max_drop_margin")
    if margin:
        lines += ["", f"--max-drop {report.get('max_drop')} was kept on a lower confidence bound: margin "
                      f"{margin['points']:.2f} points ({margin['method']}, confidence {margin['confidence']})."]
    if report.get("quantize"):
        lines += ["", f"The deployed row is the shipped fp32 checkpoint; `deployed {report['quantize']}` is the "
                      f"{report['quantize']} backbone the exits run on."]
    if report.get("scored_by", "pytorch") != "pytorch" or report.get("calibration_runtime", "pytorch") != "pytorch":
        lines += ["", f"Rows scored on {report.get('scored_by', 'pytorch')}'s outputs; thresholds chosen on "
                      f"{report.get('calibration_runtime', 'pytorch')}'s."]
    if report.get("split_warning"):
        lines += ["", f"**Warning (split):** {report['split_warning']}."]
    for w in report.get("calibration_warnings") or []:
        lines += ["", f"**Warning (calibration):** {w}"]
    if (report.get("timing") or {}).get("differs"):
        lines += ["", f"**Warning (timing):** {report['timing']['differs']}."]
    if report.get("gaps"):
        lines += ["Gaps: " + ", ".join(f"{k.replace('_', ' ')} {100 * v:+.1f}%" for k, v in report["gaps"].items())]
    if report.get("curves"):
        lines += ["", f"![speedup-accuracy curves]({CURVES_SVG})", "",
                  f"Speedup-{report['metric']} curves ([{CURVES_SVG}]({CURVES_SVG}); data in report.json `curves`): "
                  "each criterion swept over one global threshold, static truncation at each exit, the oracle "
                  "bound, and the calibrated operating point (star)."]
        for split, c in report["curves"].items():
            if (c or {}).get("left_out"):
                reads = "it reads" if len(c["left_out"]) == 1 else "they read"
                lines += ["", f"No {split} curve for {', '.join(c['left_out'])}: {reads} the hidden state, and "
                              "these rows are a runtime's own outputs, which carry logits only."]
    if report.get("timing"):
        tm = report["timing"]
        if tm.get("whole_batch_speedup"):
            lines += ["", f"Whole-batch exiting (the batch leaves when all its rows may): "
                          f"{tm['whole_batch_speedup']:.2f}x vs per-sample exits {tm['speedup_measured']:.2f}x."]
        lines += ["", f"Wall clock ({tm.get('runtime', tm.get('engine', 'pytorch'))}): batch size {tm.get('batch_size', 1)}, "
                      f"{tm['examples']} examples x {tm['repeats']} runs (median), "
                      f"{tm['threads']} threads, model forward only; early-exit/simulation exit mismatches: "
                      f"{tm['exit_mismatches']}."]
        if tm.get("machine"):  # reports written before eebert recorded it have none
            host = tm["machine"]
            lines += ["", f"Timed on {host.get('gpu') or host['cpu']} ({host['cpus']} CPUs"
                          + "".join(f", {k} {v}" for k, v in host.get("caches", {}).items()) + f"), torch {host['torch']}"
                          + (f", onnxruntime {host['onnxruntime']}" if host.get("onnxruntime") else "") + "."]
    return "\n".join(lines) + "\n"


REPORT_JSON, REPORT_MD = "report.json", "report.md"
STALE = "> **Stale:** this report describes a calibration that has since been replaced; re-run `eebert benchmark`.\n\n"


def write_report(folder: Path, report: dict) -> None:
    """report.json / report.md / curves.svg; the report records the calibration it describes."""
    if (folder / CALIBRATION).is_file():
        report = {**report, **derivation(folder, CALIBRATION)}
    write_json(folder / REPORT_JSON, report)
    if report.get("curves"):
        write_text(folder / CURVES_SVG, curves_svg(report["curves"], report["metric"],
                                                   f"eebert: speedup vs {report['metric']}"))
    write_text(folder / REPORT_MD, markdown(report))


def _current(folder: Path) -> dict[str, str]:
    f = folder / CALIBRATION
    return {CALIBRATION: file_sha256(f)} if f.is_file() else {}


def load_report(folder: str | Path) -> dict:
    """report.json, refused when it describes a calibration that has since been replaced."""
    folder = Path(folder)
    report = read_json(folder / REPORT_JSON)
    check_derivation(report, _current(folder), f"{folder / REPORT_JSON} (a report of an older calibration)",
                     f"eebert benchmark {folder}")
    return report


def mark_stale(folder: Path) -> None:
    """After a new calibration: flag report.md (what people read) when it describes the old one."""
    md = folder / REPORT_MD
    if not (folder / REPORT_JSON).is_file() or not md.is_file():
        return
    try:
        load_report(folder)
    except EebertError:
        text = md.read_text(encoding="utf-8")
        if not text.startswith(STALE):
            write_text(md, STALE + text)
