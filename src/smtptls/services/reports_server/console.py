"""The console's decisions, pure: the time window, the overview ranking, trends and
silence. Store rows in, frozen values out; the clock is passed in.

Windows are whole UTC days ending today (inclusive): ``24h`` is yesterday and today
(the last 24 hours touch both), ``7d`` / ``30d`` / ``90d`` the last 7, 30, 90 days,
``custom`` two dates. The previous window is as long and ends the day before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from urllib.parse import urlencode

from smtptls.errors import ConfigError
from smtptls.store.reports_console import ReporterActivity, ReporterLastSeen

__all__ = ["DEFAULT_WINDOW", "WINDOWS", "DomainRow", "Window", "overview_rows", "parse_window"]

#: The windows offered, in days (24h spans two UTC days: yesterday and today).
WINDOWS: Mapping[str, int] = {"24h": 2, "7d": 7, "30d": 30, "90d": 90}
DEFAULT_WINDOW = "7d"
#: A custom window at most this long (twenty years; the charts group days beyond 92).
MAX_WINDOW_DAYS = 7320
#: A domain is "silent" after this many days without a report, if it used to get them.
DEFAULT_STALE_DAYS = 3
#: ... where "used to" means on at least this many distinct days.
MIN_DAYS_FOR_SILENCE = 2


@dataclass(frozen=True, slots=True)
class Window:
    key: str  # "24h", "7d", "30d", "90d" or "custom"
    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def previous(self) -> Window:
        end = self.start - timedelta(days=1)
        return Window(self.key, end - timedelta(days=self.days - 1), end)

    def query(self) -> dict[str, str]:
        if self.key == "custom":
            return {"window": "custom", "from": self.start.isoformat(),
                    "to": self.end.isoformat()}
        return {"window": self.key}

    def url(self, path: str, **extra: str) -> str:
        args = {**self.query(), **{k: v for k, v in extra.items() if v}}
        return f"{path}?{urlencode(args)}"

    @property
    def label(self) -> str:
        if self.key == "custom":
            return f"{self.start.isoformat()} to {self.end.isoformat()}"
        return {"24h": "last 24 hours", "7d": "last 7 days", "30d": "last 30 days",
                "90d": "last 90 days"}[self.key]


def parse_window(key: str | None, start: str | None = None, end: str | None = None, *,
                 today: date) -> Window:
    """The window a URL asks for; :class:`ConfigError` for anything else."""
    key = (key or DEFAULT_WINDOW).strip().lower()
    if key in WINDOWS:
        return Window(key, today - timedelta(days=WINDOWS[key] - 1), today)
    if key != "custom":
        raise ConfigError(f"unknown window {key[:20]!r}: use " + ", ".join(WINDOWS)
                          + " or custom")
    try:
        first = date.fromisoformat((start or "").strip()[:10])
        last = date.fromisoformat((end or "").strip()[:10]) if end else today
    except ValueError:
        raise ConfigError("a custom window needs from= and to= dates (YYYY-MM-DD)") from None
    if last < first:
        first, last = last, first
    if (last - first).days + 1 > MAX_WINDOW_DAYS:
        raise ConfigError(f"a custom window spans at most {MAX_WINDOW_DAYS} days")
    return Window("custom", first, last)


def failure_rate(successful: int, failed: int) -> float | None:
    total = successful + failed
    return None if total == 0 else failed / total


@dataclass(frozen=True, slots=True)
class DomainRow:
    """One domain on the overview."""

    domain: str
    successful: int
    failed: int
    reports: int
    reporters: tuple[str, ...]
    previous_rate: float | None
    last_received: datetime | None
    last_day: date | None
    silent_days: int | None  # days without a report, when it used to get them
    per_reporter: tuple[ReporterActivity, ...] = field(default=())

    @property
    def sessions(self) -> int:
        return self.successful + self.failed

    @property
    def rate(self) -> float | None:
        return failure_rate(self.successful, self.failed)

    @property
    def trend(self) -> str:
        """``up`` / ``down`` / ``same`` (failure rate against the previous window),
        ``new`` when the previous window had no sessions, ``none`` when this one has none."""
        if self.rate is None:
            return "none"
        if self.previous_rate is None:
            return "new"
        delta = self.rate - self.previous_rate
        if abs(delta) < 0.0005:  # under 0.05 percentage points: no change worth showing
            return "same"
        return "up" if delta > 0 else "down"


def _silent(seen: Sequence[ReporterLastSeen], today: date, stale_days: int) -> int | None:
    if not seen:
        return None
    last = max(s.last_day for s in seen)
    days_reported = max(s.days_reported for s in seen)
    gap = (today - last).days
    if gap >= stale_days and days_reported >= MIN_DAYS_FOR_SILENCE:
        return gap
    return None


def overview_rows(current: Iterable[ReporterActivity], previous: Iterable[ReporterActivity],
                  last_seen: Iterable[ReporterLastSeen], *, today: date,
                  stale_days: int = DEFAULT_STALE_DAYS, own_domains: Iterable[str] = ()
                  ) -> list[DomainRow]:
    """Every domain known (reported on ever, or configured), ranked: most failed
    sessions in the window first, then the most recent report, then the name."""
    cur: dict[str, list[ReporterActivity]] = {}
    for a in current:
        cur.setdefault(a.policy_domain, []).append(a)
    prev: dict[str, tuple[int, int]] = {}
    for a in previous:
        ok, bad = prev.get(a.policy_domain, (0, 0))
        prev[a.policy_domain] = (ok + a.successful, bad + a.failed)
    seen: dict[str, list[ReporterLastSeen]] = {}
    for s in last_seen:
        seen.setdefault(s.policy_domain, []).append(s)
    names = set(cur) | set(seen) | {d.lower().rstrip(".") for d in own_domains}
    rows = []
    for name in names:
        acts = cur.get(name, [])
        s = seen.get(name, [])
        rows.append(DomainRow(
            domain=name,
            successful=sum(a.successful for a in acts),
            failed=sum(a.failed for a in acts),
            reports=sum(a.reports for a in acts),
            reporters=tuple(sorted({a.organization for a in acts})),
            previous_rate=failure_rate(*prev.get(name, (0, 0))),
            last_received=max((x.last_received for x in s), default=None),
            last_day=max((x.last_day for x in s), default=None),
            silent_days=_silent(s, today, stale_days),
            per_reporter=tuple(sorted(acts, key=lambda a: (-a.failed, a.organization))),
        ))
    rows.sort(key=lambda r: (-r.failed, -(r.last_received.timestamp() if r.last_received
                                          else 0), r.domain))
    return rows


def silent_reporters(last_seen: Iterable[ReporterLastSeen], *, today: date,
                     stale_days: int) -> list[tuple[ReporterLastSeen, int]]:
    """Reporters that used to report on a domain and have not for ``stale_days``."""
    out = []
    for s in last_seen:
        gap = (today - s.last_day).days
        if gap >= stale_days and s.days_reported >= MIN_DAYS_FOR_SILENCE:
            out.append((s, gap))
    return out
