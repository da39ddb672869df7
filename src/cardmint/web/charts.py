"""Small inline SVG line charts, rendered on the server: no JavaScript library, no build.

`line_chart` draws one or more series of (time, value) points against a shared time axis,
with y-axis ticks in the series' unit, the first and last time on the x axis, an optional
threshold line (the runbook's p95 100 ms, pool 80 %), and a <title>/<desc> pair so a
screen reader hears what the picture shows. A None value breaks a line (a gap in the
samples is not drawn as a straight run between its ends). Series differ in colour AND
dash pattern, so the chart still reads without colour.

Series come as a mapping (name -> points) or as a list of `Series`; x is a time (the
usual case) or a plain number.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

__all__ = ["PALETTE", "Point", "Series", "format_value", "line_chart", "nice_max"]

Point = tuple[datetime | float, float | None]


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[Point]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#CC79A7", "#009E73", "#D55E00", "#56B4E9")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
THRESHOLD_COLOUR = "#B42318"
AXIS_COLOUR = "#667085"
TEXT_COLOUR = "#344054"
LEFT, RIGHT, BOTTOM = 68, 10, 22  # room for tick labels up to "$10,000.00"
LEGEND_ROW = 16
OFF_SCALE = 4.0  # a threshold more than this many times the highest value is not drawn
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
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10 * power  # pragma: no cover - the loop ends at 10


def _x(value: datetime | float) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def _x_label(x: float, span: float, timed: bool) -> str:
    if not timed:
        return f"{x:g}"
    moment = datetime.fromtimestamp(x, UTC)  # the pages show UTC throughout
    return moment.strftime("%H:%M" if span <= 2 * 86_400 else "%Y-%m-%d")


def _ident(title: str, names: list[str]) -> str:
    """An id for aria-labelledby, the same on every render of the same chart (two charts
    on one page with the same title and series need `ident=`)."""
    digest = hashlib.blake2s(f"{title}|{names}".encode(), digest_size=5).hexdigest()
    return f"chart-{digest}"


def _segments(points: Sequence[Point]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive known values, in x order, x as a number."""
    out: list[list[tuple[float, float]]] = [[]]
    for x, value in sorted(((_x(x), v) for x, v in points), key=lambda p: p[0]):
        if value is None or not math.isfinite(value):
            if out[-1]:
                out.append([])
            continue
        out[-1].append((x, float(value)))
    return [run for run in out if run]


def _legend(names: list[str], width: int) -> list[tuple[str, float, float]]:
    """(name, x, baseline) of each legend entry, wrapped into rows that fit `width`."""
    out: list[tuple[str, float, float]] = []
    x, row = float(LEFT), 0
    for name in names:
        need = 30 + 6.5 * len(name)
        if x > LEFT and x + need > width - RIGHT:
            x, row = float(LEFT), row + 1
        out.append((name, x, 14 + LEGEND_ROW * row))
        x += need
    return out


def line_chart(series: Mapping[str, Sequence[Point]] | Sequence[Series], *,
               unit: str = "", title: str = "", threshold: float | None = None,
               threshold_label: str | None = None, width: int = 480, height: int = 160,
               start: datetime | float | None = None, end: datetime | float | None = None,
               ident: str | None = None,
               y_label: Callable[[float], str] | None = None) -> Markup:
    """An inline <svg> of `series`. `unit` labels values (`ms`, `%`, `$`) unless `y_label`
    formats them; `start`/`end` fix the x axis (e.g. the last hour, however many samples
    there are), points outside it are left out."""
    pairs = (list(series.items()) if isinstance(series, Mapping)
             else [(s.label, s.points) for s in series])
    names = [name for name, _ in pairs]
    legend = _legend(names, width)
    top = 8 + LEGEND_ROW * (1 + max((int((b - 14) // LEGEND_ROW) for *_, b in legend),
                                    default=0))
    if width < LEFT + RIGHT + 40 or height < top + BOTTOM + 40:
        raise ValueError(f"{width}x{height} px is too small for this chart")
    fmt = y_label or (lambda v: format_value(v, unit))
    timed = any(isinstance(x, datetime) for _, pts in pairs for x, _ in pts) \
        or isinstance(start, datetime) or isinstance(end, datetime)
    lo = None if start is None else _x(start)
    hi = None if end is None else _x(end)
    runs = {name: [[p for p in run if (lo is None or p[0] >= lo) and (hi is None or p[0] <= hi)]
                   for run in _segments(points)] for name, points in pairs}
    runs = {name: [r for r in rs if r] for name, rs in runs.items()}
    known = [p for rs in runs.values() for r in rs for p in r]
    ident = escape(ident or _ident(title, names))
    label = title or ", ".join(names) or "chart"
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

    x0 = lo if lo is not None else min(p[0] for p in known)
    x1 = hi if hi is not None else max(p[0] for p in known)
    span = x1 - x0
    if span <= 0:  # one moment only: centre it
        x0, x1, span = x0 - 1, x1 + 1, 2.0
    data_top = max(p[1] for p in known)
    # The scale takes in a threshold near the data; one far above it (p95 at 2 ms against a
    # 100 ms target) would flatten every line onto the axis, so it is named, not drawn.
    on_scale = threshold is not None and threshold <= OFF_SCALE * max(data_top, 0.0)
    top_value = max(data_top, threshold) if on_scale and threshold is not None else data_top
    low = min(0.0, min(p[1] for p in known))
    high = nice_max(top_value * 1.05) if top_value > 0 else 1.0
    plot_w, plot_h = width - LEFT - RIGHT, height - top - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * (x - x0) / span

    def py(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low))

    parts = [head, f'<desc id="{ident}-d">{escape(_describe(runs, fmt, threshold))}</desc>']
    # y ticks (bottom, half, top) with faint grid lines, then the axes
    for tick in (low, (low + high) / 2, high):
        ty = py(tick)
        parts.append(f'<line x1="{LEFT}" y1="{ty:.1f}" x2="{width - RIGHT}" y2="{ty:.1f}" '
                     f'stroke="{AXIS_COLOUR}" stroke-opacity="0.25"/>'
                     f'<text x="{LEFT - 4}" y="{ty + 4:.1f}" text-anchor="end" '
                     f'fill="{TEXT_COLOUR}" {FONT}>{escape(fmt(tick))}</text>')
    parts.append(f'<line x1="{LEFT}" y1="{top}" x2="{LEFT}" y2="{height - BOTTOM}" '
                 f'stroke="{AXIS_COLOUR}"/>'
                 f'<line x1="{LEFT}" y1="{height - BOTTOM}" x2="{width - RIGHT}" '
                 f'y2="{height - BOTTOM}" stroke="{AXIS_COLOUR}"/>')
    for x, anchor in ((x0, "start"), (x1, "end")):
        parts.append(f'<text x="{px(x):.1f}" y="{height - 6}" text-anchor="{anchor}" '
                     f'fill="{TEXT_COLOUR}" {FONT}>{escape(_x_label(x, span, timed))}</text>')
    if threshold is not None and not on_scale:
        text = f"{threshold_label or fmt(threshold)}: above this scale"
        parts.append(f'<g class="threshold off-scale"><text x="{LEFT + 4}" y="{top + 10}" '
                     f'text-anchor="start" fill="{THRESHOLD_COLOUR}" {FONT}>'
                     f'▲ {escape(text)}</text></g>')
    elif threshold is not None:  # labelled at the left: the latest points are at the right
        ty = py(threshold)
        text = threshold_label or fmt(threshold)
        parts.append(f'<g class="threshold"><line x1="{LEFT}" y1="{ty:.1f}" '
                     f'x2="{width - RIGHT}" y2="{ty:.1f}" stroke="{THRESHOLD_COLOUR}" '
                     f'stroke-dasharray="5 4" stroke-width="1.5"/>'
                     f'<text x="{LEFT + 4}" y="{ty - 3:.1f}" text-anchor="start" '
                     f'fill="{THRESHOLD_COLOUR}" {FONT}>{escape(text)}</text></g>')
    for i, ((name, rs), (_, lx, ly)) in enumerate(zip(runs.items(), legend, strict=True)):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        stroke = (f'stroke="{colour}" stroke-width="2" fill="none"'
                  + (f' stroke-dasharray="{dash}"' if dash else ""))
        parts.append(f'<g class="series" data-series="{escape(name)}">')
        for run in rs:
            if len(run) == 1:  # a lone sample: a dot, or it would not show at all
                parts.append(f'<circle cx="{px(run[0][0]):.1f}" cy="{py(run[0][1]):.1f}" '
                             f'r="2.5" fill="{colour}"/>')
            else:
                points = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in run)
                parts.append(f'<polyline points="{points}" {stroke}/>')
        parts.append("</g>")
        parts.append(f'<line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 18:.1f}" y2="{ly - 4}" '
                     f'{stroke}/><text x="{lx + 22:.1f}" y="{ly}" fill="{TEXT_COLOUR}" '
                     f'{FONT}>{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _describe(runs: Mapping[str, list[list[tuple[float, float]]]],
              fmt: Callable[[float], str], threshold: float | None) -> str:
    """The chart in words: each series' latest and highest value, and the threshold."""
    said = []
    for name, rs in runs.items():
        values = [p for r in rs for p in r]
        if not values:
            said.append(f"{name}: no data")
            continue
        latest = max(values, key=lambda p: p[0])[1]
        highest = max(v for _, v in values)
        said.append(f"{name}: latest {fmt(latest)}, highest {fmt(highest)}")
    if threshold is not None:
        said.append(f"threshold {fmt(threshold)}")
    return "; ".join(said) + "."
