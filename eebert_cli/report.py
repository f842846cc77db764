"""Render benchmark reports: report.json, report.md and a rich table."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .artifact import write_json, write_text

ROWS = (("deployed", "deployed model"), ("early_exit", "early exit"),
        ("static_truncation", "static truncation"), ("oracle", "oracle"))


def _pct(x):
    return "-" if x is None else f"{100 * x:.2f}"


def _x(x):
    return "-" if x is None else f"{x:.2f}x"


def _cells(report: dict, key: str) -> list[str]:
    r = report[key]
    lat = r.get("latency_ms") or {}
    name = dict(ROWS)[key]
    if key == "static_truncation":
        name += f" (layer {r['layer']})"
    return [name, _pct(r.get("accuracy")), _pct(r.get("agreement")), _x(r.get("speedup_flops")),
            _x(r.get("speedup_measured")), f"{lat['p50']:.2f}" if lat else "-", f"{lat['p99']:.2f}" if lat else "-"]


HEADER = ["", "accuracy %", "agreement %", "FLOPs speedup", "measured speedup", "p50 ms", "p99 ms"]


def table(report: dict) -> Table:
    crit = report.get("criterion")
    t = Table(title=f"eebert benchmark on {report['split']} ({report['examples']} examples), "
                    f"criterion {crit}, target {report.get('target_speedup') or '-'}")
    for h in HEADER:
        t.add_column(h, justify="left" if not h else "right")
    for key, _ in ROWS:
        t.add_row(*_cells(report, key))
    return t


def markdown(report: dict) -> str:
    ee = report["early_exit"]
    lines = [f"# eebert report", "",
             f"Split `{report['split']}` ({report['examples']} examples); criterion `{report.get('criterion')}`; "
             f"target speedup {report.get('target_speedup') or '-'}; exits `{report['exits']['type']}` after layers "
             f"{report['exits']['layers']}.", "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(report, key)) + " |" for key, _ in ROWS]
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
    val = report.get("validation_estimate")
    if val:
        lines += ["", f"Calibration estimate on validation: {val['speedup_flops']:.2f}x "
                      f"(95% CI {val['speedup_ci95'][0]:.2f}-{val['speedup_ci95'][1]:.2f})."]
    if report.get("gaps"):
        lines += ["Gaps: " + ", ".join(f"{k.replace('_', ' ')} {100 * v:+.1f}%" for k, v in report["gaps"].items())]
    if report.get("timing"):
        tm = report["timing"]
        lines += ["", f"Wall clock: batch size 1, {tm['examples']} examples x {tm['repeats']} runs (median), "
                      f"{tm['threads']} threads, model forward only; early-exit/simulation exit mismatches: "
                      f"{tm['exit_mismatches']}."]
    return "\n".join(lines) + "\n"


def write_report(folder: Path, report: dict) -> None:
    write_json(folder / "report.json", report)
    write_text(folder / "report.md", markdown(report))
