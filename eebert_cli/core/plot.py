"""A tiny SVG line-chart writer for the speedup-accuracy curves (no plotting dependency).

Panels share a legend; each series is a polyline with optional dash pattern and
point markers; ticks are chosen at round steps. Output is plain SVG 1.1 text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#bcbd22", "#393b79", "#ad494a", "#637939"]


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str = "#333333"
    dash: str = ""            #: SVG stroke-dasharray, "" = solid
    width: float = 1.6
    marker: str = ""          #: "", "dot", "square" or "star"
    line: bool = True


@dataclass
class Panel:
    title: str
    series: list[Series] = field(default_factory=list)


def nice_step(span: float, ticks: int = 6) -> float:
    raw = span / max(ticks, 1)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _ticks(lo: float, hi: float) -> list[float]:
    step = nice_step(hi - lo)
    start = math.ceil(lo / step - 1e-9) * step
    return [round(start + i * step, 10) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:g}"


def _marker(kind: str, x: float, y: float, color: str) -> str:
    if kind == "dot":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{color}"/>'
    if kind == "square":
        return f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" fill="{color}"/>'
    if kind == "star":
        pts = []
        for i in range(10):
            r = 7.5 if i % 2 == 0 else 3.2
            a = math.pi / 2 + i * math.pi / 5
            pts.append(f"{x + r * math.cos(a):.1f},{y - r * math.sin(a):.1f}")
        return f'<polygon points="{" ".join(pts)}" fill="{color}" stroke="white" stroke-width="0.8"/>'
    return ""


def chart(panels: list[Panel], xlabel: str, ylabel: str, title: str = "", panel_w: int = 430,
          panel_h: int = 330, legend_w: int = 270) -> str:
    """SVG text: panels side by side with common axis ranges and one legend on the right."""
    xs = [p[0] for pn in panels for s in pn.series for p in s.points]
    ys = [p[1] for pn in panels for s in pn.series for p in s.points]
    if not xs:
        xs, ys = [1.0, 2.0], [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    padx, pady = 0.03 * (x1 - x0 or 1), 0.05 * (y1 - y0 or 1)
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady
    ml, mr, mt, mb = 58, 14, 52, 46
    width = len(panels) * (panel_w + ml + mr) + legend_w
    height = panel_h + mt + mb
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" font-size="15" '
                   f'font-weight="bold">{escape(title)}</text>')
    for i, pn in enumerate(panels):
        ox = i * (panel_w + ml + mr) + ml

        def sx(v, ox=ox):
            return ox + (v - x0) / (x1 - x0) * panel_w

        def sy(v):
            return mt + panel_h - (v - y0) / (y1 - y0) * panel_h

        out.append(f'<text x="{ox + panel_w / 2:.0f}" y="{mt - 10}" text-anchor="middle" font-size="13" '
                   f'font-weight="bold">{escape(pn.title)}</text>')
        out.append(f'<rect x="{ox}" y="{mt}" width="{panel_w}" height="{panel_h}" fill="none" stroke="#888"/>')
        for t in _ticks(x0, x1):
            out.append(f'<line x1="{sx(t):.1f}" y1="{mt}" x2="{sx(t):.1f}" y2="{mt + panel_h}" stroke="#eee"/>')
            out.append(f'<text x="{sx(t):.1f}" y="{mt + panel_h + 16}" text-anchor="middle">{_fmt(t)}x</text>')
        for t in _ticks(y0, y1):
            out.append(f'<line x1="{ox}" y1="{sy(t):.1f}" x2="{ox + panel_w}" y2="{sy(t):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{ox - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<text x="{ox + panel_w / 2:.0f}" y="{mt + panel_h + 36}" text-anchor="middle">'
                   f'{escape(xlabel)}</text>')
        out.append(f'<text transform="translate({ox - 42},{mt + panel_h / 2:.0f}) rotate(-90)" '
                   f'text-anchor="middle">{escape(ylabel)}</text>')
        for s in pn.series:
            pts = [(sx(x), sy(y)) for x, y in s.points]
            if s.line and len(pts) > 1:
                dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
                out.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" '
                           f'stroke="{s.color}" stroke-width="{s.width}"{dash} stroke-linejoin="round"/>')
            if s.marker:
                out += [_marker(s.marker, x, y, s.color) for x, y in pts]
    # legend: every distinct label once, in first-seen order
    seen: dict[str, Series] = {}
    for pn in panels:
        for s in pn.series:
            seen.setdefault(s.label, s)
    lx = len(panels) * (panel_w + ml + mr) + 10
    for j, s in enumerate(seen.values()):
        y = mt + 8 + j * 20
        if s.line:
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<line x1="{lx}" y1="{y}" x2="{lx + 28}" y2="{y}" stroke="{s.color}" '
                       f'stroke-width="{s.width}"{dash}/>')
        if s.marker:
            out.append(_marker(s.marker, lx + 14, y, s.color))
        out.append(f'<text x="{lx + 36}" y="{y + 4}">{escape(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def curves_svg(curves: dict, metric: str = "accuracy", title: str = "") -> str:
    """The report's speedup-accuracy picture: one panel per split (validation, test...)."""
    colors: dict[str, str] = {}
    panels = []
    for split, c in curves.items():
        if not c:
            continue
        pn = Panel(split)
        for name, pts in c.get("criteria", {}).items():
            color = colors.setdefault(name, PALETTE[len(colors) % len(PALETTE)])
            dash = ("", "7 3", "2 2")[list(colors).index(name) % 3]  # curves that coincide stay visible
            pn.series.append(Series(name, [(p["speedup"], 100 * p["accuracy"]) for p in pts], color, dash=dash))
        if c.get("static_truncation"):
            pn.series.append(Series("static truncation", [(p["speedup"], 100 * p["accuracy"])
                                                          for p in c["static_truncation"]],
                                    "#555555", dash="6 4", marker="square"))
        if c.get("oracle"):
            pn.series.append(Series("oracle", [(p["speedup"], 100 * p["accuracy"]) for p in c["oracle"]],
                                    "#000000", dash="2 3", width=1.4))
        if c.get("deployed"):
            d = c["deployed"]
            pn.series.append(Series("deployed model", [(d["speedup"], 100 * d["accuracy"])], "#000000",
                                    marker="dot", line=False))
        if c.get("chosen"):
            d = c["chosen"]
            pn.series.append(Series("calibrated operating point", [(d["speedup"], 100 * d["accuracy"])],
                                    "#d62728", marker="star", line=False))
        panels.append(pn)
    return chart(panels, "FLOPs speedup", f"{metric} (%)", title)
