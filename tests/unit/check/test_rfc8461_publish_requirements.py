"""What ``smtptls publish mta-sts`` does for the RFC 8461 publisher requirements (no network).

- A5 (§3.1): the record's ``id`` names one policy instance: a changed body always gets
  an id never used before, an unchanged body keeps its id;
- B5 (§3.3): a published policy fits the 64 KB senders may allow;
- C5 (§8.1): the policy is updated before the TXT record, and the old policy's
  lifetime is respected when MX hosts or the mode change.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest

from smtptls.cli.main import main
from smtptls.cli.publish import policy_state
from smtptls.mtasts import MAX_AGE_LIMIT, parse_policy
from smtptls.mtasts.policy import MAX_POLICY_BYTES
from smtptls.mtasts.record import StsRecord

T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
A = "version: STSv1\r\nmode: testing\r\nmx: mx1.example.com\r\nmax_age: 86400\r\n"
B = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmax_age: 86400\r\n"
C = "version: STSv1\r\nmode: enforce\r\nmx: *.example.com\r\nmax_age: 604800\r\n"


def _publish(tmp_path, capsys, *args: str) -> tuple[int, dict]:
    argv = ["publish", "mta-sts", "--domain", "example.com", "--out", str(tmp_path),
            "--json", *args]
    code = main(argv)
    out = capsys.readouterr().out
    return code, (json.loads(out) if code == 0 else {})


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize("gap", [dt.timedelta(seconds=1), dt.timedelta(days=1)],
                         ids=["1s", "1d"])
def test_rfc8461_3_1_id_names_one_policy_instance(gap):
    """A -> B -> A -> C -> C: every change gets an id never used before (A published
    again is a new instance); an unchanged body keeps its id. Ids are valid sts-ids."""
    state, previous_body, when, used = None, None, T0, set()
    for body in (A, B, A, C, C):
        new = policy_state(body, state, when)
        StsRecord(new.id)  # RFC 8461 §3.1: 1-32 letters or digits
        if body == previous_body:
            assert new == state
        else:
            assert new.id not in used, (body, new.id, used)
            used.add(new.id)
        state, previous_body, when = new, body, when + gap
    assert len(used) == 4


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_change_within_one_second_still_changes_the_id():
    a = policy_state(A, None, T0)
    b = policy_state(B, a, T0)
    assert b.id != a.id and policy_state(A, b, T0).id != b.id


@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_publish_changes_the_id_with_the_body(tmp_path, capsys):
    code, first = _publish(tmp_path, capsys, "--mx", "mx1.example.com", "--mode", "testing",
                           "--max-age", "86400")
    assert code == 0 and first["changed"] is True
    code, same = _publish(tmp_path, capsys, "--mx", "mx1.example.com", "--mode", "testing",
                          "--max-age", "86400")
    assert code == 0 and same["changed"] is False and same["id"] == first["id"]
    code, other = _publish(tmp_path, capsys, "--mx", "mx1.example.com", "--mode", "enforce",
                           "--max-age", "86400")
    assert code == 0 and other["changed"] is True and other["id"] != first["id"]
    assert other["record"] == f"v=STSv1; id={other['id']}"
    assert StsRecord.parse(other["record"]).id == other["id"]


@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_published_policy_fits_the_size_senders_allow(tmp_path, capsys):
    long_label = "a" * 60
    many = [f"h{i}.{long_label}.{long_label}.{long_label}.example" for i in range(400)]
    args = [a for name in many for a in ("--mx", name)]
    code, _ = _publish(tmp_path, capsys, *args, "--mode", "enforce", "--max-age", "86400")
    assert code == 2  # over 64 KB: refused, nothing written
    assert not (tmp_path / "example.com" / "mta-sts.txt").exists()
    code, out = _publish(tmp_path, capsys, *args[:200], "--mode", "enforce",
                         "--max-age", str(MAX_AGE_LIMIT))
    assert code == 0
    written = (tmp_path / "example.com" / "mta-sts.txt").read_bytes()
    assert len(written) <= MAX_POLICY_BYTES and parse_policy(written.decode()).mx == tuple(
        many[:100])


@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_policy_before_txt_and_old_policy_lifetime_kept(tmp_path, capsys):
    code, _ = _publish(tmp_path, capsys, "--mx", "mx1.example.com", "--mode", "enforce",
                       "--max-age", "604800")
    assert code == 0
    code, out = _publish(tmp_path, capsys, "--mx", "mx1.example.com", "--mx",
                         "mx2.example.com", "--mode", "testing", "--max-age", "86400")
    assert code == 0
    steps = out["steps"]
    # the policy file is written now; the TXT record with the new id comes after it
    assert parse_policy((tmp_path / "example.com" / "mta-sts.txt").read_text()).mx == (
        "mx1.example.com", "mx2.example.com")
    assert steps[0].startswith("1. publish the policy") and out["id"] not in steps[0]
    assert steps[1].startswith("2. then publish") and out["id"] in steps[1]
    # the old enforce policy (max_age 604800) keeps working: its MX hosts stay valid and
    # the new MX host waits until cached copies have expired
    assert any("lowering security" in s and "604800" in s for s in steps), steps
    assert any("mx2.example.com" in s and "604800" in s and "after" in s for s in steps), steps
