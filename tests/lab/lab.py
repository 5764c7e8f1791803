"""The lab: DNS (NSD + Unbound), a CA, HTTPS policy hosts, STARTTLS receivers, Postfix.

``Lab().start()`` brings everything up inside one loopback /16; ``lab.add(LabDomain(...))``
publishes domains at any time (one re-sign, reload and cache flush per call, however
many domains it carries); ``lab.close()`` stops everything the lab started and removes
its runtime directory. See tests/lab/README.md and tests/lab/API.md.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dns.message

from . import daemons, runtime
from .model import CertKind, LabDomain, LabError, LabMx, LabZone, ZoneKind, normalize_name
from .pki import CertChain, LabPki
from .servers import LabMessage, PolicyRequest, ServerThread
from .zones import ZoneBuilder, quote_txt

if TYPE_CHECKING:
    from .exim import Exim
    from .postfix import Postfix

__all__ = ["Lab"]

STARTUP_TIMEOUT = 15.0
POSTFIX_VERSIONS = ("3.7", "3.10")  # the machine's own; Debian trixie's (postfix310.py)
RELOAD_TIMEOUT = 10.0

BUILTIN_ZONES = (
    ("test", ZoneKind.SECURE),
    ("secure.test", ZoneKind.SECURE),
    ("insecure.test", ZoneKind.INSECURE),
    ("bogus.test", ZoneKind.BOGUS),
    ("expired.test", ZoneKind.EXPIRED),
)


class Lab:
    """One running lab. Thread-safe; every method may be called from any thread."""

    ZONE_ROOT = "test"
    ZONE_SECURE = "secure.test"
    ZONE_INSECURE = "insecure.test"
    ZONE_BOGUS = "bogus.test"
    ZONE_EXPIRED = "expired.test"

    def __init__(self, net: int | None = None) -> None:
        self._requested_net = net
        self._lock = threading.RLock()
        self._domains: dict[str, LabDomain] = {}
        self._addresses: dict[str, str] = {}
        self._policy_names: set[str] = set()
        self._mx_hosts: set[str] = set()
        self._postfixes: list[Postfix] = []
        self._started = False
        self._closed = False
        self.startup_seconds: float | None = None
        self.net: runtime.LabNet | None = None

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> Lab:
        t0 = time.monotonic()
        runtime.reap_all_stale()
        self.net = runtime.acquire_net(self._requested_net)
        atexit.register(self.close)
        try:
            self._start(t0)
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _start(self, t0: float) -> None:
        net = self._require_net()
        self.dir = net.dir
        self.pki = LabPki(self.dir / "pki")
        self.zones = ZoneBuilder(self.dir / "zones", net.nsd)
        for name, kind in BUILTIN_ZONES:
            self.zones.add_zone(name, kind)
        root = self.zones.zones["test"]
        self.trust_anchor = f"test. IN DS {root.ds}"
        self.trust_anchor_file = self.dir / "trust-anchor.ds"
        self.trust_anchor_file.write_text(self.trust_anchor + "\n")
        self.resolv_conf = self.dir / "resolv.conf"
        self.resolv_conf.write_text(
            f"nameserver {net.resolver}\noptions trust-ad edns0 timeout:2 attempts:2\n")
        self._publish_all(reload=False)

        self.nsd = daemons.Nsd(self.dir, net.nsd, self.zones.dir)
        self.nsd.write_config([z for z in self.zones.zones])
        self.unbound = daemons.Unbound(self.dir, net.resolver, net.nsd, self.trust_anchor_file)
        self.unbound.write_config()
        nsd = self.nsd.start()
        ub = self.unbound.start()
        self._write_state()

        fallback = self.pki.issue("no-sni.lab.invalid", CertKind.SELF_SIGNED)
        self.servers = ServerThread(net.policy, fallback)
        self.servers.start()

        deadline = t0 + STARTUP_TIMEOUT + 10
        daemons.wait_dns(net.nsd, "test.", nsd, deadline=deadline)
        daemons.wait_dns(net.resolver, "test.", ub, deadline=deadline, want_ad=True)
        self._started = True
        self._write_state()

    def close(self) -> None:
        """Stop everything this lab started and remove its directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)
        for pf in list(self._postfixes):
            with contextlib.suppress(Exception):
                pf.stop()
        servers = getattr(self, "servers", None)
        if servers is not None:
            with contextlib.suppress(Exception):
                servers.stop()
        for part in (getattr(self, "unbound", None), getattr(self, "nsd", None)):
            if part is not None and part.daemon is not None:
                with contextlib.suppress(Exception):
                    part.daemon.stop()
        if self.net is not None:
            # Anything still marked with this lab's directory (a daemon's stray child).
            with contextlib.suppress(Exception):
                runtime.kill_pids(runtime.find_lab_processes(self.net.dir))
            shutil.rmtree(self.net.dir, ignore_errors=True)
            self.net.release()  # the (empty) lock file stays for the next lab

    def __enter__(self) -> Lab:
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_net(self) -> runtime.LabNet:
        if self.net is None:
            raise LabError("the lab is not started")
        return self.net

    def _write_state(self, **extra: Any) -> None:
        net = self._require_net()
        state = {
            "net": net.n,
            "dir": str(net.dir),
            "owner_pid": os.getpid(),
            "resolver": list(self.resolver),
            "authoritative": list(self.authoritative),
            "policy_address": net.policy,
            "ca_file": str(self.ca_file),
            "trust_anchor_file": str(self.trust_anchor_file),
            "pids": {d.name: d.pid for d in self._daemons()},
        }
        old = runtime.read_state(net.dir) or {}
        state.update({k: v for k, v in old.items() if k not in state})
        state.update(extra)
        runtime.write_state(net.dir, state)

    def _daemons(self) -> list[daemons.Daemon]:
        out = []
        for part in (getattr(self, "nsd", None), getattr(self, "unbound", None)):
            if part is not None and part.daemon is not None:
                out.append(part.daemon)
        return out

    # --- addresses and files ------------------------------------------------------------

    @property
    def resolver(self) -> tuple[str, int]:
        return (self._require_net().resolver, 53)

    @property
    def authoritative(self) -> tuple[str, int]:
        return (self._require_net().nsd, 53)

    @property
    def policy_address(self) -> str:
        return self._require_net().policy

    @property
    def postfix_address(self) -> str:
        return self._require_net().postfix

    @property
    def postfix310_address(self) -> str:
        return self._require_net().postfix310

    @property
    def exim_address(self) -> str:
        return self._require_net().exim

    @property
    def ca_file(self) -> Path:
        return self.pki.ca_file

    @property
    def untrusted_ca_file(self) -> Path:
        return self.pki.untrusted_ca_file

    def address_of(self, host: str) -> str:
        """The address assigned to an MX host (LabError if it has none)."""
        host = normalize_name(host)
        try:
            return self._addresses[host]
        except KeyError:
            raise LabError(f"no lab address for {host}") from None

    # --- certificates -------------------------------------------------------------------

    def issue(self, names: str | Iterable[str], kind: CertKind | str = CertKind.GOOD, *,
              full_chain: bool = False) -> CertChain:
        """A certificate chain of ``kind`` for ``names`` from the lab PKI (cached)."""
        if not isinstance(names, str):
            names = tuple(names)
        return self.pki.issue(names, kind, full_chain=full_chain)

    # --- publishing ---------------------------------------------------------------------

    def add(self, *domains: LabDomain) -> Any:
        """Publish ``domains`` (replacing any of the same name) in one DNS update.

        Returns the domain with its MX addresses filled in, or a list of them when more
        than one is given.
        """
        if not domains:
            raise LabError("lab.add needs at least one LabDomain")
        for d in domains:
            if not isinstance(d, LabDomain):
                raise LabError(f"lab.add takes LabDomain values, got {d!r}")
        with self._lock:
            for d in domains:
                self.zones.zone_for(d.name)  # LabError for a name outside the lab
            for d in domains:
                self._domains.pop(d.name, None)
                self._domains[d.name] = d
            try:
                self._apply()
            except BaseException:
                for d in domains:
                    self._domains.pop(d.name, None)
                # Zones signed before the failure carry the rejected records: publish
                # the state without them again.
                with contextlib.suppress(LabError):
                    self._apply()
                raise
            out = [self._domains[d.name].with_addresses(self._addresses) for d in domains]
        return out[0] if len(out) == 1 else out

    def remove(self, *names: str) -> None:
        """Withdraw domains (their records, policy host and receivers) in one update."""
        with self._lock:
            for n in names:
                self._domains.pop(normalize_name(n), None)
            self._apply()

    def add_zone(self, zone: LabZone) -> None:
        """Create a zone below ``test`` (delegated from its parent, DS if signed)."""
        with self._lock:
            z = self.zones.add_zone(zone.name, zone.kind)
            if z.published is not None:
                return
            self._publish_all(reload=False, only={z.name})
            self.nsd.addzone(z.name)
            self._apply()
            daemons.wait_dns(self.authoritative[0], z.name + ".", self.nsd.daemon,
                             deadline=time.monotonic() + RELOAD_TIMEOUT, serial=z.serial)

    def _records(self) -> dict[str, list[tuple[str, str, str]]]:
        """Every record of every domain, grouped by the zone it belongs to."""
        net = self._require_net()
        recs: dict[str, list[tuple[str, str, str]]] = {z: [] for z in self.zones.zones}

        def put(owner: str, rtype: str, rdata: str) -> None:
            recs[self.zones.zone_for(owner).name].append((owner, rtype, rdata))

        for d in self._domains.values():
            for m in d.mx:
                if m.publish_mx:
                    put(d.name, "MX", f"{m.pref} {m.host}.")
            for label, values in d.txt.items():
                owner = f"{label}.{d.name}" if label and label != "@" else d.name
                for v in values:
                    put(owner, "TXT", quote_txt(v))
            if d.policy is not None:
                put(d.policy_host, "A", net.policy if d.policy.reachable else net.unreachable)
            for owner, rtype, rdata in d.records:
                put(owner, rtype, rdata)
        for host, (mx, chain) in self._mx_table().items():
            put(host, "A", self._addresses[host])
            for spec in mx.tlsa:
                put(f"_{mx.port}._tcp.{host}", "TLSA", self.pki.tlsa_rdata(spec, chain))
        return recs

    def _mx_table(self) -> dict[str, tuple[LabMx, CertChain]]:
        net = self._require_net()
        table: dict[str, tuple[LabMx, CertChain]] = {}
        for d in self._domains.values():
            for m in d.mx:
                if m.host not in self._addresses:
                    self._addresses[m.host] = net.mx(len(self._addresses))
                m2 = dataclasses.replace(m, address=self._addresses[m.host])
                table[m.host] = (m2, self.pki.issue(m.host, m.cert, full_chain=m.full_chain))
        return table

    def _publish_all(self, *, reload: bool, only: set[str] | None = None) -> list[str]:
        now = dt.datetime.now(dt.UTC)
        recs = self._records()
        changed = []
        for name, zone in self.zones.zones.items():
            if only is not None and name not in only:
                continue
            if zone.published is None and reload:
                continue  # a zone not yet known to NSD is added by add_zone
            if self.zones.publish(zone, self.zones.render(zone, recs[name]), now):
                changed.append(name)
        return changed

    def _apply(self) -> None:
        if not self._started:
            raise LabError("the lab is not started")
        changed = self._publish_all(reload=True)
        for name in changed:
            self.nsd.reload(name)
        deadline = time.monotonic() + RELOAD_TIMEOUT
        assert self.nsd.daemon is not None
        for name in changed:
            daemons.wait_dns(self.authoritative[0], name + ".", self.nsd.daemon,
                             deadline=deadline, serial=self.zones.zones[name].serial)
        if changed:
            self.unbound.flush("test")
        # Servers: policy hosts and receivers follow the domains.
        policies = {}
        for d in self._domains.values():
            if d.policy is not None and d.policy.reachable:
                policies[d.policy_host] = (d.policy, self.pki.issue(d.policy_host, d.policy.cert))
        removed = self._policy_names - set(policies)
        self.servers.set_policies(policies, removed)
        self._policy_names = set(policies)
        table = self._mx_table()
        self.servers.set_receivers(table)
        gone = self._mx_hosts - set(table)
        if gone:
            self.servers.remove_receivers(gone)
        self._mx_hosts = set(table)

    # --- observations -------------------------------------------------------------------

    def messages(self, host: str) -> list[LabMessage]:
        """Messages the receiver of MX ``host`` accepted, oldest first."""
        return self.servers.messages(normalize_name(host))

    def clear_messages(self, host: str | None = None) -> None:
        self.servers.clear_messages(normalize_name(host) if host else None)

    def wait_for_messages(self, host: str, count: int = 1,
                          timeout: float = 20.0) -> list[LabMessage]:
        """Block until ``host`` has accepted ``count`` messages; LabError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.messages(host)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise LabError(f"{host}: {len(got)} message(s) after {timeout}s, wanted {count}")
            time.sleep(0.05)

    def policy_requests(self, domain: str) -> list[PolicyRequest]:
        """HTTP requests the policy host of ``domain`` received (by Host header)."""
        name = normalize_name(domain)
        host = name if name.startswith("mta-sts.") else f"mta-sts.{name}"
        return self.servers.requests(host)

    def receiver_sni(self, host: str) -> list[str]:
        """SNI names clients sent to the receiver of MX ``host`` (RFC 7672 §8.1 checks)."""
        return self.servers.sni_seen(normalize_name(host))

    def query(self, name: str, rdtype: str = "A", *, server: str = "resolver",
              dnssec: bool = True, timeout: float = 3.0) -> dns.message.Message:
        """One query to the lab resolver (or ``server="authoritative"``), AD+DO set."""
        addr = self.resolver[0] if server == "resolver" else self.authoritative[0]
        return daemons.query(addr, name, rdtype, dnssec=dnssec, timeout=timeout)

    # --- Postfix ------------------------------------------------------------------------

    def postfix(self, policy_map: str | None = None, *, version: str = "3.7",
                tlsrpt_socket: str | None = None, smtp_chroot: bool = False,
                **main_cf: str) -> Postfix:
        """Start a sending Postfix (stopping an earlier one of the same version).

        ``version="3.7"``: the machine's own Postfix (tests/lab/postfix.py);
        ``version="3.10"``: Debian trixie's, from a cached root file system
        (tests/lab/postfix310.py; ``tlsrpt_socket`` turns its TLSRPT client on,
        ``smtp_chroot`` runs its ``smtp`` chrooted into the queue directory).
        """
        from .postfix import Postfix
        from .postfix310 import Postfix310

        if version not in POSTFIX_VERSIONS:
            raise LabError(f"no lab Postfix {version!r} (have {', '.join(POSTFIX_VERSIONS)})")
        if (tlsrpt_socket is not None or smtp_chroot) and version == "3.7":
            raise LabError("tlsrpt_socket and smtp_chroot are for Postfix 3.10")
        with self._lock:
            for old in [p for p in self._postfixes if p.version == version]:
                if old.running:
                    old.stop()
                self._postfixes.remove(old)
            pf: Postfix
            if version == "3.10":
                pf = Postfix310(self, policy_map=policy_map, main_cf=main_cf,
                                tlsrpt_socket=tlsrpt_socket, smtp_chroot=smtp_chroot)
            else:
                pf = Postfix(self, policy_map=policy_map, main_cf=main_cf)
            self._postfixes.append(pf)
            pf.start()
            return pf

    # --- Exim ---------------------------------------------------------------------------

    def exim(self, policyd: str | None = None, *, macros: dict[str, str] | None = None,
             main: str = "") -> Exim:
        """Start a sending Exim 4.96 (tests/lab/exim.py), stopping an earlier one;
        ``policyd`` (``inet:HOST:PORT``) includes contrib/exim/'s smtptls parts."""
        from .exim import Exim

        with self._lock:
            for old in [p for p in self._postfixes if isinstance(p, Exim)]:
                old.stop()
                self._postfixes.remove(old)
            ex = Exim(self, policyd=policyd, macros=macros, main=main)
            self._postfixes.append(ex)  # type: ignore[arg-type] # stopped at close() too
            ex.start()
            return ex

