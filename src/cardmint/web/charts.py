"""Small inline SVG line charts, rendered on the server: no JavaScript library, no build.

`line_chart` draws one or more series of (time, value) points against a shared time axis,
with y-axis ticks in the series' unit, the first and last time on the x axis, an optional
threshold line (the runbook's p95 100 ms, pool 80 %), and a <title>/<desc> pair so a
screen reader hears what the picture shows. A None value breaks a line (a gap in the
samples is not drawn as a straight run between its ends). Series differ in colour AND
dash pattern, so the chart still reads without colour.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from datetime import datetime

from markupsafe import Markup, escape

__all__ = ["PALETTE", "Point", "format_value", "line_chart", "nice_max"]

Point = tuple[datetime, float | None]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#CC79A7", "#009E73", "#D55E00", "#56B4E9")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
THRESHOLD_COLOUR = "#B42318"
AXIS_COLOUR = "#667085"
TEXT_COLOUR = "#344054"
LEFT, RIGHT, TOP, BOTTOM = 52, 10, 22, 22  # room for tick labels and the legend
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def format_value(value: float, unit: str) -> str:
    """`12.5 ms`, `80 %`, `$4.20`: as few digits as read well at chart size."""
    if math.isclose(value, round(value)) or abs(value) >= 100:
        text = f"{value:,.0f}"
    elif abs(value) >= 10:
        text = f"{value:,.1f}".rstrip("0").rstrip(".")
    else:
        text = f"{value:,.2f}".rstrip("0").rstrip(".")
    if unit in ("$", "€", "£"):
        return f"{unit}{text}"
    return f"{text} {unit}" if unit else text


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above `value` (> 0)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power  # pragma: no cover - the loop ends at 10


def _time_label(moment: datetime, span_s: float) -> str:
    return moment.strftime("%H:%M" if span_s <= 2 * 86_400 else "%Y-%m-%d")


def _ident(title: str, series: Mapping[str, Sequence[Point]]) -> str:
    """An id for aria-labelledby, the same on every render of the same chart (two charts
    on one page with the same title and series need `ident=`)."""
    digest = hashlib.blake2s(f"{title}|{list(series)}".encode(), digest_size=5).hexdigest()
    return f"chart-{digest}"


def _segments(points: Sequence[Point]) -> list[list[tuple[datetime, float]]]:
    """Runs of consecutive known values, in time order."""
    out: list[list[tuple[datetime, float]]] = [[]]
    for moment, value in sorted(points, key=lambda p: p[0]):
        if value is None or not math.isfinite(value):
            if out[-1]:
                out.append([])
            continue
        out[-1].append((moment, float(value)))
    return [run for run in out if run]


def line_chart(series: Mapping[str, Sequence[Point]], *, unit: str,
               threshold: float | None = None, threshold_label: str | None = None,
               title: str = "", width: int = 480, height: int = 160,
               start: datetime | None = None, end: datetime | None = None,
               ident: str | None = None) -> Markup:
    """An inline <svg> of `series` (name -> points). `start`/`end` fix the time axis (e.g.
    the last hour, however many samples there are); points outside it are left out."""
    if width < LEFT + RIGHT + 20 or height < TOP + BOTTOM + 20:
        raise ValueError(f"a chart needs at least {LEFT + RIGHT + 20}x{TOP + BOTTOM + 20} px")
    runs = {name: [[p for p in run if (start is None or p[0] >= start)
                    and (end is None or p[0] <= end)] for run in _segments(points)]
            for name, points in series.items()}
    runs = {name: [r for r in rs if r] for name, rs in runs.items()}
    known = [p for rs in runs.values() for r in rs for p in r]
    ident = escape(ident or _ident(title, series))
    label = title or ", ".join(series) or "chart"
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'aria-labelledby="{ident}-t {ident}-d">'
            f'<title id="{ident}-t">{escape(label)}</title>')
    if not known:
        return Markup(
            f'{head}<desc id="{ident}-d">No data for this period.</desc>'
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" fill="none" '
            f'stroke="{AXIS_COLOUR}" stroke-dasharray="4 4"/>'
            f'<text x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" '
            f'fill="{TEXT_COLOUR}" {FONT}>no data</text></svg>')

    t0 = start or min(p[0] for p in known)
    t1 = end or max(p[0] for p in known)
    span = max((t1 - t0).total_seconds(), 1e-6)
    top_value = max([p[1] for p in known] + ([threshold] if threshold is not None else []))
    low = min(0.0, min(p[1] for p in known))
    high = nice_max(top_value * 1.05) if top_value > 0 else 1.0
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM

    def x(moment: datetime) -> float:
        return LEFT + plot_w * (moment - t0).total_seconds() / span

    def y(value: float) -> float:
        return TOP + plot_h * (1 - (value - low) / (high - low))

    parts = [head, f'<desc id="{ident}-d">{escape(_describe(runs, unit, threshold))}</desc>']
    # axes and y ticks (0, half, top), with faint grid lines
    for tick in (low, (low + high) / 2, high):
        ty = y(tick)
        parts.append(f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{width - RIGHT}" y2="{ty:.1f}" '
                     f'stroke="{AXIS_COLOUR}" stroke-opacity="0.25"/>'
                     f'<text x="{LEFT - 4}" y="{ty + 4:.1f}" text-anchor="end" '
                     f'fill="{TEXT_COLOUR}" {FONT}>{escape(format_value(tick, unit))}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{height - BOTTOM}" '
                 f'stroke="{AXIS_COLOUR}"/>'
                 f'<line x1="{LEFT}" y1="{height - BOTTOM}" x2="{width - RIGHT}" '
                 f'y2="{height - BOTTOM}" stroke="{AXIS_COLOUR}"/>')
    for moment, anchor in ((t0, "start"), (t1, "end")):
        parts.append(f'<text x="{x(moment):.1f}" y="{height - 6}" text-anchor="{anchor}" '
                     f'fill="{TEXT_COLOUR}" {FONT}>{escape(_time_label(moment, span))}</text>')
    if threshold is not None:  # labelled at the left: the latest points are at the right
        ty = y(threshold)
        text = threshold_label or format_value(threshold, unit)
        parts.append(f'<g class="threshold"><line x1="{LEFT}" y1="{ty:.1f}" '
                     f'x2="{width - RIGHT}" y2="{ty:.1f}" stroke="{THRESHOLD_COLOUR}" '
                     f'stroke-dasharray="5 4" stroke-width="1.5"/>'
                     f'<text x="{LEFT + 4}" y="{ty - 3:.1f}" text-anchor="start" '
                     f'fill="{THRESHOLD_COLOUR}" {FONT}>{escape(text)}</text></g>')
    legend_x = LEFT
    for i, (name, rs) in enumerate(runs.items()):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        stroke = (f'stroke="{colour}" stroke-width="2" fill="none"'
                  + (f' stroke-dasharray="{dash}"' if dash else ""))
        parts.append(f'<g class="series" data-series="{escape(name)}">')
        for run in rs:
            if len(run) == 1:  # a lone sample: a dot, or it would not show at all
                parts.append(f'<circle cx="{x(run[0][0]):.1f}" cy="{y(run[0][1]):.1f}" '
                             f'r="2.5" fill="{colour}"/>')
            else:
                points = " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in run)
                parts.append(f'<polyline points="{points}" {stroke}/>')
        parts.append("</g>")
        parts.append(f'<line x1="{legend_x}" y1="10" x2="{legend_x + 18}" y2="10" {stroke}/>'
                     f'<text x="{legend_x + 22}" y="14" fill="{TEXT_COLOUR}" {FONT}>'
                     f'{escape(name)}</text>')
        legend_x += 30 + 7 * len(name)
    parts.append("</svg>")
    return Markup("".join(parts))


def _describe(runs: Mapping[str, list[list[tuple[datetime, float]]]], unit: str,
              threshold: float | None) -> str:
    """The chart in words: each series' latest and highest value, and the threshold."""
    said = []
    for name, rs in runs.items():
        values = [p for r in rs for p in r]
        if not values:
            said.append(f"{name}: no data")
            continue
        latest = max(values, key=lambda p: p[0])[1]
        highest = max(v for _, v in values)
        said.append(f"{name}: latest {format_value(latest, unit)}, "
                    f"highest {format_value(highest, unit)}")
    if threshold is not None:
        said.append(f"threshold {format_value(threshold, unit)}")
    return "; ".join(said) + "."
