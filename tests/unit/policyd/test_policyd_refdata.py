"""postfix-mta-sts-resolver's reference data (socketmap request -> expected response),
run against our engine in an in-memory DNS world shaped like that suite's test zones.

Where that daemon's answer is not what we answer, the test asserts OUR answer and says
why. Differences: ``[good.loc]`` (a smart host its own policy does not list: we defer,
RFC 8461 §4.1); for
``refdata_nosni.tsv`` (that daemon run with SNI switched off) we still send
``servername=hostname``: an MX serving several names picks its certificate by SNI, and
RFC 8461 §4.2 requires the certificate to be valid for the MX host name, so SNI is
always sent (there is no switch to turn it off).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smtptls.config import Config, PolicydConfig
from smtptls.errors import FetchTlsError
from smtptls.services.policyd.decide import PolicyEngine
from smtptls.services.policyd.socketmap import Reply, parse_request
from smtptls.store import MemoryPolicyCache

REFDATA = ("refdata.tsv", "refdata_nosni.tsv", "refdata_strict.tsv")


def load(corpus: Path, name: str) -> list[tuple[str, str]]:
    rows = []
    for line in (corpus / "vectors" / "postfix-mta-sts-resolver" / name).read_text().splitlines():
        if line.strip():
            request, expected = line.split("\t", 1)
            rows.append((request, expected))
    return rows


def build_world(world) -> None:  # type: ignore[no-untyped-def]
    """The zones of that suite: every test domain's MX is mail.loc."""
    policy = world.policy
    for domain in ("good.loc", "valid-none.loc", "testing.loc", "no-record.loc",
                   "bad-record1.loc", "bad-record2.loc", "bad-policy1.loc", "bad-policy2.loc",
                   "bad-policy3.loc", "bad-cert1.loc", "bad-cert2.loc"):
        world.mx(domain, "mail.loc")
    world.host("mail.loc")
    world.host("good.loc")
    world.sts("good.loc", "v=STSv1; id=1", policy("mail.loc"))
    world.sts("valid-none.loc", "v=STSv1; id=1", policy(mode="none"))
    world.sts("testing.loc", "v=STSv1; id=1", policy("mail.loc", mode="testing"))
    world.sts("bad-record1.loc", "v=STSv1; id=")  # empty id
    world.sts("bad-record2.loc", "v=STSv2; id=1")  # wrong version: not an STS record
    world.sts("bad-policy1.loc", "v=STSv1; id=1", "version: STSv1\nmode: enforce\nmax_age: 1\n")
    world.sts("bad-policy2.loc", "v=STSv1; id=1", "<html>not a policy</html>")
    world.sts("bad-policy3.loc", "v=STSv1; id=1", "version: STSv1\nmode: bogus\nmx: mail.loc\n"
              "max_age: 86400\n")
    for domain in ("bad-cert1.loc", "bad-cert2.loc"):
        world.sts(domain, "v=STSv1; id=1", FetchTlsError("certificate verify failed",
                                                         url=f"https://mta-sts.{domain}/"))


OUR_ANSWER = {
    # refdata_nosni.tsv: that daemon without SNI; we always send SNI (see module doc)
    ("refdata_nosni.tsv", "OK secure match=mail.loc"):
        "OK secure match=mail.loc servername=hostname",
}
#: ``[good.loc]``: the smart host good.loc is the only host, and its own policy lists
#: only mail.loc. That daemon answers ``secure match=mail.loc``, which lets Postfix
#: deliver to good.loc whenever its certificate also names mail.loc. RFC 8461 §4.1: a
#: host that matches no ``mx`` pattern MUST NOT be used, so we defer.
NO_MATCHING_HOST = "TEMP MTA-STS enforce: no MX host matches the policy (RFC 8461 §4.1): " \
    "defer delivery"
OUR_ANSWER_BY_REQUEST = {"test [good.loc]": NO_MATCHING_HOST,
                         "test [good.loc]:123": NO_MATCHING_HOST}


@pytest.mark.rfc("8461 5")
@pytest.mark.parametrize("name", REFDATA)
async def test_refdata_postfix_mta_sts_resolver(corpus: Path, name: str, world, clock) -> None:
    build_world(world)
    strict = name == "refdata_strict.tsv"
    cfg = Config(policyd=PolicydConfig(map_name="test", strict_testing=strict))
    engine = PolicyEngine(cfg, dns=world, cache=MemoryPolicyCache(), clock=clock,
                          fetcher=world.fetch)
    rows = load(corpus, name)
    assert len(rows) >= 20
    for request_text, expected in rows:
        request = parse_request(request_text.encode())
        got = (await engine.explain(request.key)).reply.to_text()
        want = OUR_ANSWER_BY_REQUEST.get(request_text,
                                         OUR_ANSWER.get((name, expected), expected))
        assert got == want, f"{name}: {request_text!r}"
        Reply.parse(got)  # and it is a well-formed socketmap reply
