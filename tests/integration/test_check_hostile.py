"""Hostile MX hosts: each yields a finding, and no check outlives its time limit.

Tiny asyncio servers on lab addresses (127.N.242.x), published in lab DNS as MX hosts:
a tarpit, an endless banner, a server sending a huge certificate chain, and a
man-in-the-middle that strips STARTTLS from the EHLO reply of a real lab receiver
(for a domain with an MTA-STS enforce policy, and for one with DANE).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time

import pytest

from smtptls.check import CheckOptions, Gatherer, evaluate
from smtptls.config import DnsConfig
from tests.lab import LabDomain, LabMx, PolicyHost

pytestmark = pytest.mark.lab

STEP = 2.0  # --timeout of these checks
DOMAIN_LIMIT = 8.0


class _Servers:
    def __init__(self) -> None:
        self.servers: list[asyncio.base_events.Server] = []
        self.tasks: set[asyncio.Task] = set()

    async def start(self, address: str, handler) -> None:
        async def wrapped(reader, writer):
            task = asyncio.current_task()
            self.tasks.add(task)
            try:
                await handler(reader, writer)
            except (OSError, asyncio.CancelledError, ssl.SSLError, asyncio.IncompleteReadError):
                pass
            finally:
                self.tasks.discard(task)
                writer.close()

        self.servers.append(await asyncio.start_server(wrapped, address, 25,
                                                       reuse_address=True))

    async def close(self) -> None:
        for s in self.servers:
            s.close()
        for t in list(self.tasks):
            t.cancel()
        for s in self.servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(s.wait_closed(), 2)


async def tarpit(reader, writer):
    await asyncio.sleep(600)  # accept, then say nothing


async def endless_banner(reader, writer):
    for _ in range(1_000_000):
        writer.write(b"220-" + b"x" * 70 + b"\r\n")
        await writer.drain()


def huge_chain_handler(ctx: ssl.SSLContext):
    async def handler(reader, writer):
        writer.write(b"220 huge ESMTP\r\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), 10)
            if not line:
                return
            cmd = line.strip().upper()
            if cmd.startswith(b"EHLO"):
                writer.write(b"250-huge\r\n250 STARTTLS\r\n")
            elif cmd == b"STARTTLS":
                writer.write(b"220 go ahead\r\n")
                await writer.drain()
                await writer.start_tls(ctx)
                await asyncio.sleep(10)
                return
            else:
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            await writer.drain()
    return handler


def stripping_proxy(upstream: str):
    """Relay to a real receiver, removing STARTTLS from every EHLO reply."""
    async def handler(reader, writer):
        up_r, up_w = await asyncio.open_connection(upstream, 25)

        async def client_to_server():
            while data := await reader.read(4096):
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def server_to_client():
            pending: list[bytes] = []
            while line := await up_r.readline():
                if len(line) >= 4 and line[3:4] == b"-":
                    pending.append(line)
                    continue
                lines = [x for x in pending + [line]
                         if x[4:].strip().upper() != b"STARTTLS"]
                pending = []
                if lines:
                    lines = [x[:3] + b"-" + x[4:] for x in lines[:-1]] + \
                        [lines[-1][:3] + b" " + lines[-1][4:]]
                    writer.write(b"".join(lines))
                    await writer.drain()
            writer.close()

        await asyncio.gather(client_to_server(), server_to_client())
    return handler


@pytest.fixture(scope="module")
async def hostile(lab, tmp_path_factory):
    ip = lambda k: lab.net.ip(242, k)  # noqa: E731
    servers = _Servers()
    # Receivers for the stripping proxy to relay to.
    real = lab.add(
        LabDomain("hostile-real.secure.test",
                  mx=[LabMx("mx.hostile-real.secure.test"),
                      LabMx("mx2.hostile-real.secure.test", tlsa=["3 1 1 auto"])]))
    up1, up2 = real.mx[0].address, real.mx[1].address
    big = lab.issue(["mx.hostile-huge.insecure.test"], "intermediate", full_chain=True)
    chain_file = tmp_path_factory.mktemp("huge") / "chain.pem"
    chain_file.write_bytes(big.chain_pem.encode() if isinstance(big.chain_pem, str)
                           else big.chain_pem)
    issuer_pem = chain_file.read_text().split("-----END CERTIFICATE-----")[1] + \
        "-----END CERTIFICATE-----\n"
    with chain_file.open("a") as fh:  # ~400 KiB of issuer copies after the real chain
        for _ in range(600):
            fh.write(issuer_pem.lstrip())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(chain_file, big.key_file)

    await servers.start(ip(1), tarpit)
    await servers.start(ip(2), endless_banner)
    await servers.start(ip(3), huge_chain_handler(ctx))
    await servers.start(ip(4), stripping_proxy(up1))
    await servers.start(ip(5), stripping_proxy(up2))

    def dom(label: str, zone: str, address: str, **kw) -> LabDomain:
        name = f"hostile-{label}.{zone}"
        mx = f"mx.{name}"
        recs = [(name, "MX", f"10 {mx}."), (mx, "A", address)] + kw.pop("records", [])
        return LabDomain(name, records=recs, **kw)

    sts = {"_mta-sts": ["v=STSv1; id=1"],
           "_smtp._tls": ["v=TLSRPTv1; rua=mailto:r@hostile-real.secure.test"]}
    tlsa = lab.query("_25._tcp.mx2.hostile-real.secure.test", "TLSA").answer[0][0].to_text()
    domains = [
        dom("tarpit", "insecure.test", ip(1)),
        dom("banner", "insecure.test", ip(2)),
        dom("huge", "insecure.test", ip(3)),
        dom("strip", "insecure.test", ip(4), txt=sts, policy=PolicyHost(
            body="version: STSv1\nmode: enforce\nmx: mx.hostile-strip.insecure.test\n"
                 "max_age: 604800\n")),
        dom("stripdane", "secure.test", ip(5), records=[
            ("_25._tcp.mx.hostile-stripdane.secure.test", "TLSA", tlsa)]),
    ]
    await asyncio.to_thread(lab.add, *domains)
    options = CheckOptions(dns=DnsConfig(nameservers=(lab.resolver[0],), timeout=STEP),
                           ca_file=str(lab.ca_file), timeout=STEP,
                           domain_timeout=DOMAIN_LIMIT)
    results = {}
    async with Gatherer(options) as g:
        async def one(d):
            t0 = time.monotonic()
            facts = await g.gather(d.name)
            results[d.name.split(".")[0].removeprefix("hostile-")] = (
                evaluate(facts), time.monotonic() - t0)
        await asyncio.gather(*(one(d) for d in domains))
    yield results
    await servers.close()


@pytest.mark.parametrize(("name", "code", "stage"), [
    ("tarpit", "tls.smtp-failed", "banner"),
    ("banner", "tls.smtp-failed", "banner"),
    ("huge", "tls.handshake-failed", "handshake"),
    ("strip", "tls.starttls-missing", "starttls"),
    ("stripdane", "tls.starttls-missing", "starttls"),
], ids=["tarpit", "endless-banner", "huge-chain", "starttls-stripped", "stripped-dane"])
def test_hostile_server_yields_finding_within_limit(hostile, name, code, stage):
    report, elapsed = hostile[name]
    codes = {f.code for f in report.findings}
    assert code in codes, sorted(codes)
    probe = report.to_dict()["mx"]["hosts"][0]["tls"][0]
    assert probe["error"]["stage"] == stage
    # Never a hang beyond the configured limits (a probe's total time is --timeout).
    assert elapsed < STEP * 2 + 2, elapsed
    assert not report.timed_out


@pytest.mark.rfc("8461 4")
def test_rfc8461_4_stripped_starttls_under_enforce_is_an_error(hostile):
    report, _ = hostile["strip"]
    f = next(x for x in report.findings if x.code == "mta-sts.mx-no-tls")
    assert f.severity.value == "error"


@pytest.mark.rfc("7672 2.2")
def test_rfc7672_2_2_stripped_starttls_with_dane_is_an_error(hostile):
    report, _ = hostile["stripdane"]
    f = next(x for x in report.findings if x.code == "dane.starttls-missing")
    assert f.severity.value == "error"


async def test_domain_time_limit_cuts_a_slow_check(lab, hostile):
    options = CheckOptions(dns=DnsConfig(nameservers=(lab.resolver[0],), timeout=STEP),
                           ca_file=str(lab.ca_file), timeout=30.0, domain_timeout=1.5)
    t0 = time.monotonic()
    async with Gatherer(options) as g:
        facts = await g.gather("hostile-tarpit.insecure.test")
    assert time.monotonic() - t0 < 3.0
    report = evaluate(facts)
    assert report.timed_out
    assert any(f.code == "check.time-limit" for f in report.findings)
