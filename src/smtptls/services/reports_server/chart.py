"""Server-rendered inline SVG: daily successful / failed sessions as stacked bars.

Pure: data in, SVG text out; no JavaScript, works offline. Every bar carries
``data-date``/``data-successful``/``data-failed`` and a ``<title>`` tooltip, so the
numbers are readable by people (hover) and by tests alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from html import escape

__all__ = ["MAX_DAYS", "daily_chart", "fill_days"]

MAX_DAYS = 400  # bars drawn at most; older days are left out of the chart
WIDTH, HEIGHT = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40
OK_COLOUR, FAIL_COLOUR = "#2e7d32", "#c62828"


def fill_days(points: Sequence[tuple[date, int, int]]) -> list[tuple[date, int, int]]:
    """Add zero days between the first and last day; keep the last :data:`MAX_DAYS`."""
    if not points:
        return []
    by_day: dict[date, tuple[int, int]] = {}
    for d, ok, bad in points:
        a, b = by_day.get(d, (0, 0))
        by_day[d] = (a + ok, b + bad)
    last = max(by_day)
    first = max(min(by_day), last - timedelta(days=MAX_DAYS - 1))
    out = []
    d = first
    while d <= last:
        ok, bad = by_day.get(d, (0, 0))
        out.append((d, ok, bad))
        d += timedelta(days=1)
    return out


def _nice_max(value: int) -> int:
    """Top of the axis: 4 x a round integer step, at least ``value`` (ticks stay integral)."""
    need = max(1, -(-value // 4))  # ceil(value / 4), at least 1
    magnitude = 1
    while magnitude * 10 <= need:
        magnitude *= 10
    for factor in (1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        step = factor * magnitude
        if step >= need and step == int(step):
            return 4 * int(step)
    return 40 * magnitude  # pragma: no cover - factor 10 always qualifies


def daily_chart(points: Sequence[tuple[date, int, int]], *, title: str = "",
                ident: str = "chart-sessions") -> str:
    """SVG of (day, successful, failed) points as stacked daily bars.

    Pass successful counts of 0 for a failures-only chart on its own scale (failures
    are often a tiny fraction and invisible beside the successes).
    """
    days = fill_days(points)
    label = escape(title or "Daily sessions", quote=True)
    ident = escape(ident, quote=True)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{ident}" '
            f'role="img" aria-label="{label}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%">')
    if not days:
        return (head + f'<text x="{WIDTH // 2}" y="{HEIGHT // 2}" text-anchor="middle">'
                "no sessions reported</text></svg>")
    top = _nice_max(max(ok + bad for _, ok, bad in days))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / len(days)
    bar_w = max(1.0, slot * 0.8)
    parts = [head, f"<title>{label}</title>"]
    for i in range(5):  # horizontal grid with axis labels
        value = top * i // 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#ddd" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{value}</text>')
    label_every = max(1, len(days) // 10)
    for i, (d, ok, bad) in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        h_ok = plot_h * ok / top
        h_bad = plot_h * bad / top
        y_ok = TOP + plot_h - h_ok
        y_bad = y_ok - h_bad
        iso = d.isoformat()
        tip = escape(f"{iso}: {ok} successful, {bad} failed", quote=True)
        parts.append(
            f'<g class="day" data-date="{iso}" data-successful="{ok}" data-failed="{bad}">'
            f"<title>{tip}</title>"
            f'<rect class="bar-ok" x="{x:.1f}" y="{y_ok:.1f}" width="{bar_w:.1f}" '
            f'height="{h_ok:.1f}" fill="{OK_COLOUR}"/>'
            f'<rect class="bar-failed" x="{x:.1f}" y="{y_bad:.1f}" width="{bar_w:.1f}" '
            f'height="{h_bad:.1f}" fill="{FAIL_COLOUR}"/></g>')
        if i % label_every == 0:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{HEIGHT - BOTTOM + 16}" '
                         f'text-anchor="middle" font-size="11">{iso[5:]}</text>')
    parts.append(
        f'<rect x="{LEFT}" y="{HEIGHT - 14}" width="10" height="10" fill="{OK_COLOUR}"/>'
        f'<text x="{LEFT + 14}" y="{HEIGHT - 5}" font-size="11">successful</text>'
        f'<rect x="{LEFT + 100}" y="{HEIGHT - 14}" width="10" height="10" '
        f'fill="{FAIL_COLOUR}"/>'
        f'<text x="{LEFT + 114}" y="{HEIGHT - 5}" font-size="11">failed</text>')
    parts.append("</svg>")
    return "".join(parts)
