"""Server-rendered inline SVG: sessions per day (or per few days) as stacked bars.

Pure: data in, SVG text out; no JavaScript, works offline. The chart spans the window
it is given (ending today, not at the last report), so an empty stretch shows as one.
A window longer than :data:`MAX_BARS` days is drawn a few days per bar. Every bar
carries ``data-date`` (first day), ``data-days``, ``data-successful``, ``data-failed``
and ``data-reported`` (whether any report covered it) and a ``<title>`` tooltip, so the
numbers are readable by people (hover) and by tests alike. Bars are at least
:data:`MIN_BAR` wide; days no report covered are marked by a grey tick on the axis.
Axis labels carry the year on the first label and wherever the year changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from html import escape

__all__ = ["MAX_BARS", "MAX_DAYS", "buckets", "daily_chart", "day_label"]

MAX_BARS = 92  # one bar per day up to 92 days (90d windows); longer windows group days
MAX_DAYS = 7320  # the longest window drawn at all (twenty years)
MIN_BAR = 3.0  # bar width in viewBox units: one report in a long window stays visible
MAX_LABELS = 8
WIDTH, HEIGHT = 900, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 44
OK_COLOUR, FAIL_COLOUR, GAP_COLOUR = "#2e7d32", "#c62828", "#9e9e9e"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def day_label(d: date, *, with_year: bool) -> str:
    text = f"{d.day} {_MONTHS[d.month - 1]}"
    return f"{text} {d.year}" if with_year else text


def buckets(points: Sequence[tuple[date, int, int]], start: date, end: date
            ) -> list[tuple[date, int, int, int, bool]]:
    """(first day, days, successful, failed, reported) per bar over ``start``..``end``."""
    if end < start:
        start, end = end, start
    span = min((end - start).days + 1, MAX_DAYS)
    start = end - timedelta(days=span - 1)
    size = -(-span // MAX_BARS)  # days per bar
    by_day: dict[date, tuple[int, int]] = {}
    for d, ok, bad in points:
        if start <= d <= end:
            a, b = by_day.get(d, (0, 0))
            by_day[d] = (a + ok, b + bad)
    out = []
    first = start
    while first <= end:
        days = min(size, (end - first).days + 1)
        ok = bad = 0
        reported = False
        for i in range(days):
            if (v := by_day.get(first + timedelta(days=i))) is not None:
                reported = True
                ok += v[0]
                bad += v[1]
        out.append((first, days, ok, bad, reported))
        first += timedelta(days=days)
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


def _legend(failed_only: bool, any_gap: bool) -> str:
    items = [] if failed_only else [(OK_COLOUR, "successful")]
    items.append((FAIL_COLOUR, "failed"))
    if any_gap:
        items.append((GAP_COLOUR, "no report"))
    out, x = [], LEFT
    for colour, text in items:
        out.append(f'<rect class="legend" x="{x}" y="{HEIGHT - 12}" width="10" height="10" '
                   f'fill="{colour}"/><text x="{x + 14}" y="{HEIGHT - 3}" font-size="11" '
                   f'class="legend-label">{text}</text>')
        x += 24 + 7 * len(text)
    return "".join(out)


def daily_chart(points: Sequence[tuple[date, int, int]], *, start: date, end: date,
                title: str = "", ident: str = "chart-sessions", failed_only: bool = False
                ) -> str:
    """SVG of (day, successful, failed) points as bars over the window ``start``..``end``.

    ``failed_only`` draws failed sessions alone, on their own scale (they are often a
    tiny fraction and invisible beside the successes), with a legend to match.
    """
    bars = buckets(points, start, end)
    label = escape(title or "Daily sessions", quote=True)
    ident = escape(ident, quote=True)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="{ident}" '
            f'role="img" aria-label="{label}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%">')
    parts = [head, f"<title>{label}</title>"]
    value = (lambda ok, bad: bad) if failed_only else (lambda ok, bad: ok + bad)
    top = _nice_max(max((value(ok, bad) for _, _, ok, bad, _ in bars), default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(bars))
    bar_w = min(max(MIN_BAR, slot * 0.8), 60.0)
    for i in range(5):  # horizontal grid with axis labels
        tick = top * i // 4
        y = TOP + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#ddd" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{tick}</text>')
    label_every = max(1, -(-len(bars) // MAX_LABELS))
    last_year: int | None = None
    any_gap = False
    base = TOP + plot_h
    for i, (d, days, ok, bad, reported) in enumerate(bars):
        x = LEFT + i * slot + (slot - bar_w) / 2
        h_ok = 0.0 if failed_only else plot_h * ok / top
        h_bad = plot_h * bad / top
        y_ok = base - h_ok
        y_bad = y_ok - h_bad
        iso = d.isoformat()
        span = iso if days == 1 else f"{iso} + {days - 1} days"
        tip = (f"{span}: no report" if not reported else
               f"{span}: {bad} failed" if failed_only else f"{span}: {ok} successful, {bad} failed")
        parts.append(
            f'<g class="day" data-date="{iso}" data-days="{days}" data-successful="{ok}" '
            f'data-failed="{bad}" data-reported="{int(reported)}">'
            f"<title>{escape(tip, quote=True)}</title>")
        if not failed_only:
            parts.append(f'<rect class="bar-ok" x="{x:.1f}" y="{y_ok:.1f}" width="{bar_w:.1f}" '
                         f'height="{h_ok:.1f}" fill="{OK_COLOUR}"/>')
        parts.append(f'<rect class="bar-failed" x="{x:.1f}" y="{y_bad:.1f}" '
                     f'width="{bar_w:.1f}" height="{h_bad:.1f}" fill="{FAIL_COLOUR}"/>')
        if not reported:
            any_gap = True
            parts.append(f'<rect class="gap" x="{x:.1f}" y="{base + 1:.1f}" '
                         f'width="{bar_w:.1f}" height="3" fill="{GAP_COLOUR}"/>')
        parts.append("</g>")
        if i % label_every == 0:
            with_year = last_year is None or d.year != last_year
            last_year = d.year
            parts.append(f'<text class="x-label" x="{x + bar_w / 2:.1f}" '
                         f'y="{base + 16}" text-anchor="middle" font-size="11">'
                         f"{day_label(d, with_year=with_year)}</text>")
    parts.append(_legend(failed_only, any_gap))
    parts.append("</svg>")
    return "".join(parts)
