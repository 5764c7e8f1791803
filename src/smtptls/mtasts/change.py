"""Is publishing a new MTA-STS policy safe for senders holding the live one? (pure)

Senders cache the policy they fetched for up to its ``max_age`` (RFC 8461 §3.2) and
refetch only when the ``_mta-sts`` id changes (§3.1, §3.3). A change is therefore judged
against three things: the live policy and its id, the MX hosts in DNS now, and
(optionally) the MX hosts planned after the change. Rules, each with its section:

- §3.1: the id must change whenever the policy changes, or senders never see it
  (``id-unchanged``, unsafe);
- §4.1, §5: a current or planned MX host that the new policy does not match is refused
  by senders holding it in mode ``enforce`` (``mx-not-covered``, unsafe) and reported
  in mode ``testing`` (warning);
- §3.2, §8.1: a planned MX host the live ``enforce`` policy does not match is refused
  by senders that still hold that policy, for up to its ``max_age``
  (``planned-mx-outside-old``, unsafe): the safe order is to list old and new hosts in a
  policy with a new id, wait the old ``max_age``, then change the MX RRset, then drop
  the old hosts from the policy with a new id;
- §5: ``testing`` → ``enforce`` makes every MX host's TLS and certificate mandatory;
  a downgrade takes effect only as senders refetch (warnings);
- §3.2: a lowered ``max_age`` applies only after senders refetched; ``enforce`` with a
  ``max_age`` below ``min_max_age`` leaves senders unprotected soon after a blocked
  refresh (warnings);
- §8.3: ``mode: none`` withdraws MTA-STS; it must be served for the old ``max_age``;
- no live policy: a first publication; the policy is served before the TXT record
  (§3.3: a record pointing at a policy not yet served makes senders' fetches fail).

Whether an MX host matches a pattern is decided by :mod:`smtptls.mtasts.match` (through
:meth:`Policy.matches_mx`); the id rule itself (a new id exactly when the body changes)
is the caller's (``smtptls publish mta-sts``): this module only compares the ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from smtptls.mtasts.match import mx_matches, normalize_host
from smtptls.mtasts.policy import Mode, Policy, short_enforced_max_age

__all__ = ["MODE_STRENGTH", "ChangeFinding", "ChangeVerdict", "Level", "compare"]

#: RFC 8461 §5: how much a mode protects (none < testing < enforce).
MODE_STRENGTH = {Mode.NONE: 0, Mode.TESTING: 1, Mode.ENFORCE: 2}


class Level(StrEnum):
    """How a finding weighs in the verdict: any ``unsafe`` finding makes it unsafe."""

    UNSAFE = "unsafe"  # publishing now makes senders refuse mail, or miss the change
    WARNING = "warning"  # safe for delivery, but something to watch
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class ChangeFinding:
    code: str
    level: Level
    message: str
    rfc: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "level": self.level.value, "message": self.message,
                "rfc": self.rfc}


@dataclass(frozen=True, slots=True)
class ChangeVerdict:
    """The comparison of the policy to publish with the live one.

    ``current_mx`` is None when the MX RRset was not looked at (then no coverage is
    judged); ``planned_mx`` None means the MX RRset is not to change.
    """

    domain: str
    new: Policy
    new_id: str
    old: Policy | None
    old_id: str | None
    current_mx: tuple[str, ...] | None
    planned_mx: tuple[str, ...] | None
    findings: tuple[ChangeFinding, ...]
    steps: tuple[str, ...]

    @property
    def safe(self) -> bool:
        return not any(f.level is Level.UNSAFE for f in self.findings)

    @property
    def first_publication(self) -> bool:
        return self.old is None

    @property
    def reasons(self) -> tuple[str, ...]:
        """The messages of the unsafe findings (why the change is not safe)."""
        return tuple(f.message for f in self.findings if f.level is Level.UNSAFE)

    def to_dict(self) -> dict[str, Any]:
        """Stable JSON shape (``smtptls publish mta-sts --check-change --json``)."""
        return {
            "domain": self.domain,
            "verdict": "safe" if self.safe else "unsafe",
            "safe": self.safe,
            "first_publication": self.first_publication,
            "live": None if self.old is None else {"id": self.old_id,
                                                   "policy": self.old.to_dict()},
            "new": {"id": self.new_id, "policy": self.new.to_dict()},
            "current_mx": None if self.current_mx is None else list(self.current_mx),
            "planned_mx": None if self.planned_mx is None else list(self.planned_mx),
            "findings": [f.to_dict() for f in self.findings],
            "steps": list(self.steps),
        }


def _pattern_key(pattern: str) -> str | None:
    if pattern.startswith("*."):
        base = normalize_host(pattern[2:])
        return None if base is None else "*." + base
    return normalize_host(pattern)


def _pattern_covered(pattern: str, policy: Policy) -> bool:
    """Does ``policy`` match every host ``pattern`` matches? (RFC 8461 §4.1)"""
    if pattern.startswith("*."):
        # a wildcard stands for one whole label: only the same wildcard covers it
        key = _pattern_key(pattern)
        return key is not None and key in {_pattern_key(p) for p in policy.mx}
    return policy.matches_mx(pattern)


def _hosts(names: Iterable[str] | None) -> tuple[str, ...] | None:
    if names is None:
        return None
    out: list[str] = []
    for name in names:
        host = normalize_host(name) or name
        if host not in out:
            out.append(host)
    return tuple(out)


def _publish_command(domain: str, mx: Iterable[str], policy: Policy) -> str:
    mx_args = " ".join(f"--mx {m}" for m in mx)
    return (f"smtptls publish mta-sts --domain {domain} {mx_args} --mode {policy.mode.value}"
            f" --max-age {policy.max_age} --out DIR")


def compare(domain: str, new: Policy, new_id: str, *, old: Policy | None = None,
            old_id: str | None = None, current_mx: Iterable[str] | None = None,
            planned_mx: Iterable[str] | None = None, record: str | None = None,
            min_max_age: int | None = None) -> ChangeVerdict:
    """Judge publishing ``new`` under ``new_id`` while ``old`` (id ``old_id``) is live.

    ``current_mx``: the MX host names in DNS now (None: not known); ``planned_mx``: the
    MX host names after the change (None: unchanged). ``record`` is the TXT rdata to
    publish (``v=STSv1; id=...``); ``min_max_age`` the ``max_age`` below which an
    ``enforce`` policy is called short (None: not judged). Never raises.
    """
    current = _hosts(current_mx)
    planned = _hosts(planned_mx)
    findings: list[ChangeFinding] = []

    def add(code: str, level: Level, message: str, rfc: str) -> None:
        findings.append(ChangeFinding(code, level, message, rfc))

    if old is None:
        add("first-publication", Level.NOTE,
            "no live policy: this is a first publication; serve the policy before "
            "publishing the TXT record", "RFC 8461 §3.1, §3.3")
    elif new == old and old_id == new_id:
        add("no-change", Level.NOTE, f"the policy and its id ({new_id}) are already live",
            "RFC 8461 §3.1")
    elif new == old:
        add("id-changed-same-body", Level.NOTE,
            f"the body is unchanged but the id would change ({old_id} -> {new_id}): "
            "senders refetch the same policy", "RFC 8461 §3.1")
    elif old_id is not None and old_id == new_id:
        # RFC 8461 §3.1: senders refetch only when the id changes
        add("id-unchanged", Level.UNSAFE,
            f"the policy body changes but the id stays {new_id}: senders holding the live "
            "policy never fetch the new one", "RFC 8461 §3.1")

    # RFC 8461 §4.1, §5: the new policy must match every MX host senders use with it
    new_strict = {Mode.ENFORCE: Level.UNSAFE, Mode.TESTING: Level.WARNING}.get(new.mode)
    if current is not None and new_strict is not None:
        if not current:
            add("no-mx-records", Level.WARNING,
                f"{domain} has no MX records: senders match the policy against MX host "
                "names only", "RFC 8461 §4.1")
        for host in current:
            if not new.matches_mx(host):
                what = "refuse" if new.mode is Mode.ENFORCE else "report"
                add("mx-not-covered", new_strict,
                    f"current MX host {host} matches no mx of the new policy: senders "
                    f"that fetch it {what} {host}", "RFC 8461 §4.1, §5")
    if planned is not None and new_strict is not None:
        for host in planned:
            if (current is None or host not in current) and not new.matches_mx(host):
                add("planned-mx-not-covered", new_strict,
                    f"planned MX host {host} matches no mx of the new policy",
                    "RFC 8461 §4.1, §5")

    outside_old: list[str] = []
    if old is not None and old.mode is not Mode.NONE:
        if current is not None:
            for host in current:
                if not old.matches_mx(host):
                    add("live-mx-not-covered", Level.WARNING,
                        f"MX host {host} already matches no mx of the live policy "
                        f"({old.mode.value}); the new policy "
                        f"{'matches' if new.matches_mx(host) else 'does not match'} it",
                        "RFC 8461 §4.1")
        for host in planned or ():
            if (current is None or host not in current) and not old.matches_mx(host):
                outside_old.append(host)
        if outside_old and old.max_age > 0:
            level = Level.UNSAFE if old.mode is Mode.ENFORCE else Level.WARNING
            what = "refuse" if old.mode is Mode.ENFORCE else "report"
            add("planned-mx-outside-old", level,
                f"planned MX host{'s' if len(outside_old) > 1 else ''} "
                f"{', '.join(outside_old)} match{'' if len(outside_old) > 1 else 'es'} no "
                f"mx of the live {old.mode.value} policy: senders holding it {what} "
                f"{'them' if len(outside_old) > 1 else 'it'} for up to its max_age "
                f"({old.max_age} s); change the MX RRset only after that",
                "RFC 8461 §3.2, §8.1")

    if old is not None and new != old:
        _mode_and_age(old, new, add)
    short = short_enforced_max_age(new, min_max_age) if min_max_age is not None else None
    if short is not None:
        add("max-age-short", Level.WARNING, short, "RFC 8461 §3.2")

    steps = _steps(domain, old, new, current, planned, outside_old, record)
    return ChangeVerdict(domain, new, new_id, old, old_id, current, planned,
                         tuple(findings), tuple(steps))


def _mode_and_age(old: Policy, new: Policy, add: Any) -> None:
    if MODE_STRENGTH[new.mode] > MODE_STRENGTH[old.mode]:
        if new.mode is Mode.ENFORCE:
            add("mode-upgrade", Level.WARNING,
                f"mode {old.mode.value} -> enforce: senders that refetch refuse every MX "
                "host without STARTTLS, TLS 1.2+ and a valid certificate for its name; "
                "TLSRPT reports should show no failures first (smtptls check, smtptls "
                "reports)", "RFC 8461 §4, §5")
        else:
            add("mode-upgrade", Level.NOTE,
                f"mode {old.mode.value} -> {new.mode.value}: senders report failures "
                "(TLSRPT) and still deliver", "RFC 8461 §5")
    elif MODE_STRENGTH[new.mode] < MODE_STRENGTH[old.mode]:
        add("mode-downgrade", Level.WARNING,
            f"lowering security ({old.mode.value} -> {new.mode.value}): senders keep the "
            f"cached {old.mode.value} policy until they refetch, up to its max_age "
            f"({old.max_age} s); the MX hosts it lists must stay valid until then",
            "RFC 8461 §5, §8.3" if new.mode is Mode.NONE else "RFC 8461 §5")
    if new.max_age < old.max_age:
        add("max-age-lowered", Level.WARNING,
            f"max_age lowered ({old.max_age} -> {new.max_age} s): senders apply the old "
            "value until they refetch; an MX change still waits the old max_age",
            "RFC 8461 §3.2")
    elif new.max_age > old.max_age:
        add("max-age-raised", Level.NOTE,
            f"max_age raised ({old.max_age} -> {new.max_age} s): later MX changes must "
            "wait the new value", "RFC 8461 §3.2")


def _steps(domain: str, old: Policy | None, new: Policy, current: tuple[str, ...] | None,
           planned: tuple[str, ...] | None, outside_old: list[str],
           record: str | None) -> list[str]:
    """The safe order of publication (RFC 8461 §3.3, §8.1, §8.3)."""
    owner = f"_mta-sts.{domain}."
    url = f"https://mta-sts.{domain}/.well-known/mta-sts.txt"
    txt = f'{owner} IN TXT "{record}"' if record else f'{owner} IN TXT "v=STSv1; id=<new id>"'
    publish = (f"publish the policy at {url} (HTTPS, a valid certificate for mta-sts."
               f"{domain}, text/plain) and check it with: smtptls check {domain}")
    then_txt = (f"then publish (or update) the TXT record: {txt} - senders refetch the "
                "policy only when the id changes (RFC 8461 §3.3)")
    steps: list[str] = []

    # RFC 8461 §8.1: hosts in use that the new policy drops, and the live policy lists
    dropped = [h for h in current or () if not new.matches_mx(h)
               and (old is None or old.mode is Mode.NONE or old.matches_mx(h))]
    if old is not None and old.mode is not Mode.NONE and new.mode is not Mode.NONE and (
            dropped or outside_old):
        keep = [p for p in old.mx if any(mx_matches(p, h) for h in dropped)]
        bridge = list(dict.fromkeys([*keep, *new.mx]))
        if keep:  # the bridging policy is not the one asked for: it gets its own id
            txt = f'{owner} IN TXT "v=STSv1; id=<its new id>"'
        steps.append(f"1. publish a policy listing the old and the new MX hosts (mx: "
                     f"{', '.join(bridge)}) with a new id, e.g. "
                     f"{_publish_command(domain, bridge, new)}; serve it at {url} and "
                     f"check it with: smtptls check {domain}")
        steps.append(f"2. then publish (or update) the TXT record: {txt} - senders refetch "
                     "the policy only when the id changes (RFC 8461 §3.3)")
        steps.append(f"3. wait the live policy's max_age ({old.max_age} s) after step 2: "
                     "until then senders may still hold the old policy (RFC 8461 §3.2, "
                     "§8.1)")
        if planned is not None:
            final = [p for p in bridge if any(mx_matches(p, h) for h in planned)]
            steps.append(f"4. change the MX RRset to the planned hosts ({', '.join(planned)})")
        else:
            final = list(new.mx)
            gone = f", removing {', '.join(dropped)}" if dropped else ""
            steps.append(f"4. change the MX RRset to hosts matching mx: "
                         f"{', '.join(new.mx)}{gone}")
        if final and final != bridge:
            steps.append(f"5. after the MX records' TTL has passed, drop the old MX hosts "
                         f"from the policy (mx: {', '.join(final)}) with a new id and "
                         "update the TXT record again (RFC 8461 §8.1)")
        return steps

    steps.append(f"1. {publish}")
    steps.append(f"2. {then_txt}")
    if old is None:
        if new.mode is Mode.ENFORCE:
            steps.append("note: a first policy is safest in mode testing with a TLSRPT "
                         "record; switch to enforce when reports show no failures "
                         "(RFC 8461 §5, RFC 8460)")
        return steps
    if MODE_STRENGTH[new.mode] < MODE_STRENGTH[old.mode]:
        steps.append(f"lowering security ({old.mode.value} -> {new.mode.value}): senders keep "
                     f"the cached {old.mode.value} policy until they refetch; keep every MX "
                     f"valid for the old policy for up to max_age {old.max_age} s "
                     "(RFC 8461 §5)")
        if new.mode is Mode.NONE:
            steps.append("to withdraw MTA-STS: keep serving this mode-none policy and the "
                         f"new id for at least the old max_age ({old.max_age} s), then "
                         "remove the TXT record and the policy host (RFC 8461 §8.3)")
    elif new.mode is Mode.ENFORCE and old.mode is not Mode.ENFORCE:
        steps.append(f"watch ({old.mode.value} -> enforce): before step 1, TLSRPT reports "
                     "should show no failures for any MX host; after it, a host with a bad "
                     "certificate or no STARTTLS gets no mail from senders that refetched "
                     "(RFC 8461 §5)")
    added = [p for p in new.mx if not _pattern_covered(p, old)]
    removed = [p for p in old.mx if not _pattern_covered(p, new)]
    if added and old.mode is not Mode.NONE and old.max_age > 0:
        steps.append(f"3. wait the live policy's max_age ({old.max_age} s) after step 2: "
                     "until then senders may still hold the old policy (RFC 8461 §3.2, "
                     "§8.1)")
        steps.append(f"4. new mx entries ({', '.join(added)}): only put such hosts into the "
                     f"MX RRset after step 3 ({old.max_age} s after step 2), when senders' "
                     "cached policies expired, or they "
                     "refuse them (RFC 8461 §8.1)")
        steps.append("5. to retire an old MX host afterwards: take it out of the MX RRset, "
                     "wait for its TTL, then publish the policy without it under a new id "
                     "(RFC 8461 §8.1)")
    elif added:
        steps.append(f"new mx entries ({', '.join(added)}): the live policy is mode none "
                     "or max_age 0, so senders hold no constraint: only put such hosts into "
                     "the MX RRset after step 2 (RFC 8461 §8.1)")
    if removed:
        steps.append(f"removed mx entries ({', '.join(removed)}): take these hosts out of "
                     "the MX RRset first (RFC 8461 §8.1)")
    if new.max_age < old.max_age:
        steps.append(f"max_age lowered ({old.max_age} -> {new.max_age} s): senders apply "
                     "the old value until they refetch; wait the old value before relying "
                     "on the new one (RFC 8461 §3.2)")
    return steps
