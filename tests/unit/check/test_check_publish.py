"""``smtptls publish``: policy ids, state, rollout order, records (no network)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtptls.cli.main import main
from smtptls.cli.publish import PolicyState, policy_state, rollout_steps
from smtptls.errors import SmtpTlsError
from smtptls.mtasts import Mode, Policy, parse_policy
from smtptls.mtasts.record import StsRecord
from smtptls.tlsrpt import parse_record

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


def _policy(mode: str = "enforce", mx: tuple[str, ...] = ("mx1.example.com",),
            max_age: int = 604800) -> Policy:
    return Policy("STSv1", Mode(mode), max_age, mx)


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_id_changes_only_with_the_body():
    body = _policy().to_text()
    first = policy_state(body, None, T0)
    assert StsRecord(first.id).id == first.id and len(first.id) <= 32
    same = policy_state(body, first, T0 + dt.timedelta(days=3))
    assert same == first
    changed = policy_state(_policy("testing").to_text(), first, T0 + dt.timedelta(days=3))
    assert changed.id != first.id and changed.id > first.id  # grows with time


def test_same_second_different_body_still_new_id():
    a = policy_state("version: STSv1\r\nmode: none\r\nmax_age: 1\r\n", None, T0)
    b = policy_state("version: STSv1\r\nmode: none\r\nmax_age: 2\r\n", a, T0)
    assert a.id != b.id


@given(st.text(max_size=200), st.datetimes(min_value=dt.datetime(2000, 1, 1),
                                           max_value=dt.datetime(2999, 1, 1),
                                           timezones=st.just(dt.UTC)))
def test_policy_state_round_trips_and_ids_are_valid(body, when):
    state = policy_state(body, None, when)
    assert PolicyState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    StsRecord.parse(f"v=STSv1; id={state.id}")


@given(st.recursive(st.none() | st.text(max_size=40) | st.integers(),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(
                        st.sampled_from(["id", "sha256", "created", "x"]), c, max_size=4),
                    max_leaves=10))
def test_policy_state_from_dict_only_typed_errors(data):
    try:
        PolicyState.from_dict(data)
    except SmtpTlsError:
        pass


@pytest.mark.parametrize(("old", "new", "expect"), [
    (None, _policy("enforce"), "mode testing"),
    (_policy("enforce"), _policy("testing"), "lowering security"),
    (_policy("enforce"), _policy("none", mx=()), "to withdraw MTA-STS"),
    (_policy(mx=("mx1.example.com",)), _policy(mx=("mx1.example.com", "mx2.example.com")),
     "only put such hosts into the MX RRset after"),
    (_policy(mx=("mx1.example.com", "mx2.example.com")), _policy(mx=("mx1.example.com",)),
     "take these hosts out of the MX RRset first"),
    (_policy(max_age=604800), _policy(max_age=86400), "max_age lowered"),
], ids=["first-enforce", "enforce-to-testing", "withdraw", "mx-added", "mx-removed",
        "max-age-lowered"])
@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_rollout_steps(old, new, expect):
    steps = rollout_steps("example.com", old, new, "v=STSv1; id=1")
    assert steps[0].startswith("1. publish the policy")
    assert steps[1].startswith("2. then publish")  # policy body first, then the TXT
    assert any(expect in s for s in steps), steps


def test_publish_mta_sts_writes_policy_and_state(tmp_path, capsys):
    argv = ["publish", "mta-sts", "--domain", "Example.COM", "--mx", "mx1.example.com",
            "--mode", "enforce", "--max-age", "86400", "--out", str(tmp_path), "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    body = (tmp_path / "example.com" / "mta-sts.txt").read_text()
    assert parse_policy(body).mx == ("mx1.example.com",)
    assert out["record"] == f"v=STSv1; id={out['id']}"
    assert out["txt_record"].startswith("_mta-sts.example.com. IN TXT")
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["id"] == out["id"] and again["changed"] is False


@pytest.mark.parametrize(("argv", "code"), [
    (["publish", "mta-sts", "--mode", "enforce"], 2),
    (["publish", "mta-sts", "--mx", "*.*.example.com"], 2),
    (["publish", "mta-sts", "--mx", "a.example", "--domain=-bad-"], 2),
    (["publish", "tlsrpt", "--rua", "nonsense"], 2),
], ids=["enforce-without-mx", "double-wildcard", "bad-domain", "bad-rua"])
def test_publish_rejects_invalid_input(argv, code, capsys):
    assert main(argv) == code


@pytest.mark.rfc("8460 3")
def test_rfc8460_3_publish_tlsrpt_record_is_parsed_back(capsys):
    assert main(["publish", "tlsrpt", "--domain", "example.com", "--rua",
                 "mailto:tlsrpt@example.com", "--rua", "https://r.example.com/x",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert parse_record(out["record"]).rua == ("mailto:tlsrpt@example.com",
                                               "https://r.example.com/x")


@pytest.mark.rfc("7671 8.1")
def test_rfc7671_8_1_publish_tlsa_with_next_key_is_safe(tmp_path, capsys):
    import trustme

    ca = trustme.CA()
    cur, nxt = ca.issue_cert("mx1.example.com"), ca.issue_cert("mx1.example.com")
    (tmp_path / "cur.pem").write_bytes(cur.cert_chain_pems[0].bytes())
    (tmp_path / "next.pem").write_bytes(nxt.cert_chain_pems[0].bytes())
    code = main(["publish", "tlsa", str(tmp_path / "cur.pem"), str(tmp_path / "next.pem"),
                 "--name", "mx1.example.com", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["rollover"]["safe"] is True
    assert len(out["records"]) == 2
    assert all(r["rdata"].startswith("3 1 1 ") for r in out["records"])
    assert out["records"][0]["owner"] == "_25._tcp.mx1.example.com."
    # Only the current key published: not ready, advice says to add the next one.
    code = main(["publish", "tlsa", str(tmp_path / "cur.pem"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["rollover"]["safe"] is False
    assert any(f["code"] == "no-next-key" for f in out["rollover"]["findings"])


def test_publish_tlsa_refuses_pkix_usages(tmp_path, capsys):
    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(SystemExit) as exc:  # argparse: usages 2 and 3 only
        main(["publish", "tlsa", str(tmp_path / "c.pem"), "--usage", "1"])
    assert exc.value.code == 2
