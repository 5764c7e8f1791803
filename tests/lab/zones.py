"""Zone files for the lab: rendered from Python, signed with BIND's ``dnssec-signzone``.

One ECDSAP256SHA256 key per signed zone (flags 257, signing everything with ``-z``),
NSEC, signatures valid from one hour ago for ``SIG_DAYS`` days (a signer's usual
lifetime). ``bogus`` zones are signed and
then every RRSIG except the DNSKEY one is corrupted (one bit of each signature flipped),
so the key validates but the data cannot; ``expired`` zones are signed with a validity
window that ended two days ago; ``expiring`` zones validate, but their signatures end
``EXPIRING_SIG_DAYS`` after signing (a signer whose re-signing stopped).
"""

from __future__ import annotations

import base64
import datetime as dt
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from .daemons import tool
from .model import LabError, ZoneKind

__all__ = ["Zone", "ZoneBuilder", "quote_txt"]

TTL = 30          # seconds; short so that nothing stays cached long
NEG_TTL = 5       # SOA minimum: negative answers are cached for 5 s at most
SIGN_TIMEOUT = 30
NS_NAME = "ns.test"
TOOL_TIMEOUT = 30
EXPIRING_SIG_DAYS = 3  # "expiring" zones: RRSIG expiration this long after signing
SIG_DAYS = 14  # other signed zones: BIND's and Knot's default signature lifetime
Record = tuple[str, str, str]


def quote_txt(value: str | tuple[str, ...]) -> str:
    """TXT rdata: each string quoted, escaped, split into 255-octet strings (RFC 1035)."""
    parts = (value,) if isinstance(value, str) else tuple(value)
    out = []
    for part in parts:
        raw = part.encode("utf-8")
        chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
        for chunk in chunks:
            esc = []
            for b in chunk:
                if b in (0x22, 0x5C):
                    esc.append("\\" + chr(b))
                elif 0x20 <= b < 0x7F:
                    esc.append(chr(b))
                else:
                    esc.append(f"\\{b:03d}")
            out.append('"' + "".join(esc) + '"')
    return " ".join(out)


def _stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")


@dataclass
class Zone:
    """One lab zone: its kind, key, serial and the text last published."""

    name: str
    kind: ZoneKind
    key_file: Path | None = None        # K<zone>+013+<id>.key (signed kinds)
    dnskey: str | None = None           # DNSKEY rdata text
    ds: str | None = None               # DS rdata text (SHA-256) for the parent
    serial: int = 0
    published: str | None = None        # unsigned text last signed and written
    file: Path = field(default_factory=Path)

    @property
    def signed(self) -> bool:
        return self.kind is not ZoneKind.INSECURE


class ZoneBuilder:
    """Keeps the zones, renders their text from records and signs what changed."""

    def __init__(self, directory: Path, ns_address: str) -> None:
        self.dir = directory
        self.keys = directory / "keys"
        self.keys.mkdir(parents=True, exist_ok=True)
        self.ns_address = ns_address
        self.zones: dict[str, Zone] = {}

    # --- zones and keys -----------------------------------------------------------------

    def add_zone(self, name: str, kind: ZoneKind) -> Zone:
        if name in self.zones:
            if self.zones[name].kind is not kind:
                raise LabError(f"zone {name} already exists as {self.zones[name].kind}")
            return self.zones[name]
        if name != "test" and not name.endswith(".test"):
            raise LabError(f"lab zones live below 'test', not {name!r}")
        zone = Zone(name=name, kind=kind, file=self.dir / f"{name}.zone")
        if zone.signed:
            self._keygen(zone)
        self.zones[name] = zone
        return zone

    def _keygen(self, zone: Zone) -> None:
        out = subprocess.run(
            [tool("dnssec-keygen"), "-q", "-a", "ECDSAP256SHA256", "-f", "KSK", "-n", "ZONE",
             "-K", str(self.keys), zone.name + "."],
            capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False)
        if out.returncode != 0:
            raise LabError(f"dnssec-keygen failed for {zone.name}: {out.stderr.strip()}")
        stem = out.stdout.strip().splitlines()[-1]
        zone.key_file = self.keys / f"{stem}.key"
        for line in zone.key_file.read_text().splitlines():
            if line.startswith(";") or "DNSKEY" not in line:
                continue
            fields = line.split()
            zone.dnskey = " ".join(fields[fields.index("DNSKEY") + 1:])
        if zone.dnskey is None:
            raise LabError(f"no DNSKEY in {zone.key_file}")
        rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, zone.dnskey)
        zone.ds = dns.dnssec.make_ds(zone.name + ".", rdata, "SHA256").to_text()

    def zone_for(self, name: str) -> Zone:
        """The most specific lab zone containing ``name``."""
        best: Zone | None = None
        for zname, zone in self.zones.items():
            if (name == zname or name.endswith("." + zname)) and (
                    best is None or len(zname) > len(best.name)):
                best = zone
        if best is None:
            raise LabError(f"{name!r} is not inside any lab zone (names must end in .test)")
        return best

    def parent_of(self, zone: Zone) -> Zone | None:
        if zone.name == "test":
            return None
        return self.zone_for(zone.name.split(".", 1)[1])

    # --- rendering ----------------------------------------------------------------------

    def render(self, zone: Zone, records: Iterable[Record]) -> str:
        """Unsigned zone text for ``zone`` (serial excluded from the comparison key)."""
        origin = zone.name + "."
        lines = [
            f"$ORIGIN {origin}",
            f"$TTL {TTL}",
            f"{origin} IN SOA {NS_NAME}. hostmaster.{origin} SERIAL 60 30 600 {NEG_TTL}",
            f"{origin} IN NS {NS_NAME}.",
        ]
        if zone.name == "test":
            lines.append(f"{NS_NAME}. IN A {self.ns_address}")
        if zone.dnskey:
            lines.append(f"{origin} IN DNSKEY {zone.dnskey}")
        # Delegations to child zones: NS always, DS only for signed children.
        for child in sorted(self.zones.values(), key=lambda z: z.name):
            if child is zone or self.parent_of(child) is not zone:
                continue
            lines.append(f"{child.name}. IN NS {NS_NAME}.")
            if child.signed:
                lines.append(f"{child.name}. IN DS {child.ds}")
        body = sorted({f"{owner}. IN {rtype} {rdata}" for owner, rtype, rdata in records})
        return "\n".join(lines + body) + "\n"

    def publish(self, zone: Zone, text: str, now: dt.datetime) -> bool:
        """Write (and sign) ``zone`` if ``text`` differs from what is served; True if so."""
        if text == zone.published:
            return False
        zone.serial += 1
        final = text.replace(" SERIAL ", f" {zone.serial} ", 1)
        if not zone.signed:
            zone.file.write_text(final)
        else:
            self._sign(zone, final, now)
        zone.published = text
        return True

    def _sign(self, zone: Zone, text: str, now: dt.datetime) -> None:
        assert zone.key_file is not None
        unsigned = self.dir / f"{zone.name}.unsigned"
        unsigned.write_text(text)
        if zone.kind is ZoneKind.EXPIRED:
            start, end = now - dt.timedelta(days=32), now - dt.timedelta(days=2)
        elif zone.kind is ZoneKind.EXPIRING:
            start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=EXPIRING_SIG_DAYS)
        else:
            start, end = now - dt.timedelta(hours=1), now + dt.timedelta(days=SIG_DAYS)
        tmp = zone.file.with_suffix(".signing")
        out = subprocess.run(
            [tool("dnssec-signzone"), "-q", "-P", "-z", "-O", "full", "-K", str(self.keys),
             "-o", zone.name + ".", "-f", str(tmp), "-s", _stamp(start), "-e", _stamp(end),
             str(unsigned), str(zone.key_file)],
            capture_output=True, text=True, timeout=SIGN_TIMEOUT, check=False,
            cwd=self.keys)
        if out.returncode != 0:
            raise LabError(f"dnssec-signzone failed for {zone.name}: {out.stderr.strip()}")
        if zone.kind is ZoneKind.BOGUS:
            tmp.write_text(corrupt_signatures(tmp.read_text()))
        tmp.replace(zone.file)


def corrupt_signatures(signed: str) -> str:
    """Flip one bit in every RRSIG signature except those over the DNSKEY RRset."""
    out = []
    for line in signed.splitlines():
        fields = line.split()
        # full format: owner ttl class RRSIG covered alg labels ottl exp inc tag signer sig..
        if len(fields) > 12 and fields[3] == "RRSIG" and fields[4] != "DNSKEY":
            sig = bytearray(base64.b64decode("".join(fields[12:])))
            sig[len(sig) // 2] ^= 0x01
            line = " ".join(fields[:12] + [base64.b64encode(bytes(sig)).decode()])
        out.append(line)
    return "\n".join(out) + "\n"

