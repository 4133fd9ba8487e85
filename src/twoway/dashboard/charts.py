"""Small line charts as inline SVG, drawn on the server: no charting library, nothing fetched at run time.

Every point is an element with `data-minute` and `data-value`, so a test (or a curious operator) can read
the numbers back from the page.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime

from markupsafe import Markup, escape

COLORS = ("#0969da", "#1a7f37", "#9a6700", "#cf222e", "#8250df", "#bf3989")
WIDTH, HEIGHT, PAD_LEFT, PAD_BOTTOM, PAD_TOP = 560, 150, 34, 18, 8


def line_chart(chart_id: str, title: str, minutes: Sequence[datetime], lines: Mapping[str, Sequence[float | None]],
               unit: str = "") -> Markup:
    top = max((v for values in lines.values() for v in values if v is not None), default=0.0)
    scale = _nice(top)
    plot_w, plot_h = WIDTH - PAD_LEFT - 4, HEIGHT - PAD_BOTTOM - PAD_TOP
    step = plot_w / max(1, len(minutes) - 1)

    def x(i: int) -> float:
        return PAD_LEFT + i * step

    def y(v: float) -> float:
        return PAD_TOP + plot_h - (v / scale) * plot_h

    parts = [f'<svg id="{escape(chart_id)}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{PAD_LEFT}" y1="{y(0):.1f}" x2="{WIDTH - 4}" y2="{y(0):.1f}" class="axis"/>',
             f'<text x="{PAD_LEFT - 4}" y="{PAD_TOP + 8}" class="tick" text-anchor="end">{_fmt(scale)}</text>',
             f'<text x="{PAD_LEFT - 4}" y="{y(0):.1f}" class="tick" text-anchor="end">0</text>']
    if minutes:
        parts.append(f'<text x="{PAD_LEFT}" y="{HEIGHT - 4}" class="tick">{minutes[0]:%H:%M}</text>')
        parts.append(f'<text x="{WIDTH - 4}" y="{HEIGHT - 4}" class="tick" text-anchor="end">'
                     f'{minutes[-1]:%H:%M} UTC</text>')
    for n, (name, values) in enumerate(lines.items()):
        color = COLORS[n % len(COLORS)]
        known = [(i, v) for i, v in enumerate(values) if v is not None]
        parts.append(f'<g data-series="{escape(name)}" stroke="{color}" fill="{color}">')
        if len(known) > 1:
            points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in known)
            parts.append(f'<polyline points="{points}" fill="none" stroke-width="1.5"/>')
        for i, v in known:
            if v:  # a dot where something happened; zero stays on the line
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" data-minute="{minutes[i]:%H:%M}" '
                             f'data-value="{_fmt(v)}"><title>{escape(name)} {minutes[i]:%H:%M}: '
                             f'{_fmt(v)}{escape(unit)}</title></circle>')
        parts.append("</g>")
    parts.append("</svg>")
    legend = "".join(f'<span class="key"><i style="background:{COLORS[n % len(COLORS)]}"></i>{escape(name)}</span>'
                     for n, name in enumerate(lines))
    # Every value from outside (names, titles) went through escape() above; numbers are formatted by us.
    return Markup(f'<figure><figcaption>{escape(title)} {legend}</figcaption>{"".join(parts)}</figure>')  # noqa: S704


def _nice(top: float) -> float:
    for candidate in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000):
        if top <= candidate:
            return float(candidate)
    return float(top)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.1f}"


class LagHistory:
    """Consumer lag as the API last read it, sampled while someone watches (at most every `every` seconds).

    Lag is a reading of the broker, not a log, so its history lives here: in the API process, for the
    last hour, and only from when the API started.
    """

    def __init__(self, every: float = 5.0, keep_seconds: float = 3600.0) -> None:
        self.every = every
        self.samples: deque[tuple[float, dict[str, int | None]]] = deque(maxlen=int(keep_seconds / every) + 1)

    def add(self, readings: dict[str, int | None], now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self.samples and now - self.samples[-1][0] < self.every:
            return
        self.samples.append((now, readings))

    def per_minute(self, minutes: Sequence[datetime], names: Sequence[str]) -> dict[str, list[float | None]]:
        """The highest lag seen in each minute; None where nothing was sampled."""
        index = {int(m.timestamp()) // 60: i for i, m in enumerate(minutes)}
        lines: dict[str, list[float | None]] = {n: [None] * len(minutes) for n in names}
        for at, readings in self.samples:
            i = index.get(int(at) // 60)
            if i is None:
                continue
            for name, value in readings.items():
                if name in lines and value is not None:
                    current = lines[name][i]
                    lines[name][i] = float(value) if current is None else max(current, float(value))
        return lines
