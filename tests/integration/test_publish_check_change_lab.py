"""``smtptls publish mta-sts --check-change`` run as a user runs it, against lab domains.

The live policy is fetched by the sender's discovery (``_mta-sts`` TXT, then HTTPS
from the lab's policy host, trusted through the lab CA) and the MX RRset comes from the
lab's resolver; the verdict is exit 0 (safe), 1 (unsafe) or 2 (error, one line).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SUITE_ENV
from tests.lab import LabDomain, LabMx, PolicyHost

ROOT = Path(__file__).resolve().parents[2]
MAX_AGE = 86400


def smtptls(*args: str) -> subprocess.CompletedProcess[str]:
    keep = {*SUITE_ENV, "SMTPTLS_STATE_DIR"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMTPTLS_") or k in keep}
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run([sys.executable, "-m", "smtptls", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _lab_args(lab) -> list[str]:
    host, port = lab.resolver
    return ["--nameserver", f"{host}:{port}", "--ca-file", str(lab.ca_file), "--timeout", "5"]


def _domain(lab, tag: str, *, txt: tuple[str, ...] | None = ("v=STSv1; id=20261201T000000",),
            body: str | None = None, **host) -> str:
    """A lab domain whose DNS MX is mx1 and whose live enforce policy lists mx1."""
    name = f"pc-{tag}-{random.randint(0, 10**8):08d}.{lab.ZONE_INSECURE}"
    body = body if body is not None else (
        f"version: STSv1\nmode: enforce\nmx: mx1.{name}\nmax_age: {MAX_AGE}\n")
    lab.add(LabDomain(name, mx=[LabMx(f"mx1.{name}")],
                      txt={"_mta-sts": list(txt)} if txt else {},
                      policy=PolicyHost(body=body, **host)))
    return name


def _check(lab, name: str, *mx: str, extra: tuple[str, ...] = (),
           json_out: bool = False) -> subprocess.CompletedProcess[str]:
    args = ["publish", "mta-sts", "--domain", name, "--mode", "enforce", "--max-age",
            str(MAX_AGE), "--check-change"]
    for m in mx:
        args += ["--mx", m]
    return smtptls(*args, *extra, *(["--json"] if json_out else []), *_lab_args(lab))


def _narrow(text: str) -> bool:
    return all(len(line) <= 100 for line in text.splitlines())


@pytest.mark.lab
@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_check_change_dropping_the_live_mx_is_exit_1(lab):
    name = _domain(lab, "drop")
    mx1, mx2 = f"mx1.{name}", f"mx2.{name}"
    r = _check(lab, name, mx2)
    assert r.returncode == 1, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("verdict: UNSAFE - current MX host " + mx1)
    assert "refuse" in r.stdout and "rollout order:" in r.stdout
    assert f"--mx {mx1} --mx {mx2}" in r.stdout.replace("\n     ", " ")  # the bridge
    assert _narrow(r.stdout) and r.stderr == ""
    doc = json.loads(_check(lab, name, mx2, json_out=True).stdout)
    assert doc["verdict"] == "unsafe" and doc["exit"] == 1
    assert doc["live"] == {"id": "20261201T000000", "policy": {
        "version": "STSv1", "mode": "enforce", "max_age": MAX_AGE, "mx": [mx1]}}
    assert doc["current_mx"] == [mx1]
    assert [f["code"] for f in doc["findings"] if f["level"] == "unsafe"] == ["mx-not-covered"]


@pytest.mark.lab
@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_check_change_listing_old_and_new_mx_is_exit_0(lab):
    name = _domain(lab, "both")
    mx1, mx2 = f"mx1.{name}", f"mx2.{name}"
    r = _check(lab, name, mx1, mx2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("verdict: safe\n")
    assert f"wait the live policy's max_age ({MAX_AGE} s)" in r.stdout
    assert _narrow(r.stdout)
    doc = json.loads(_check(lab, name, mx1, mx2, json_out=True).stdout)
    assert doc["safe"] is True and doc["first_publication"] is False
    assert doc["new"]["id"] != doc["live"]["id"]  # the body changed, so does the id
    assert doc["txt_record"] == f'_mta-sts.{name}. IN TXT "v=STSv1; id={doc["new"]["id"]}"'


@pytest.mark.lab
@pytest.mark.rfc("8461 8.1")
def test_rfc8461_8_1_check_change_moving_mx_now_is_exit_1_with_the_order(lab):
    name = _domain(lab, "move")
    mx1, mx2 = f"mx1.{name}", f"mx2.{name}"
    doc = json.loads(_check(lab, name, mx1, mx2, extra=("--planned-mx", mx2),
                            json_out=True).stdout)
    assert doc["exit"] == 1 and doc["planned_mx"] == [mx2]
    unsafe = [f for f in doc["findings"] if f["level"] == "unsafe"]
    assert [f["code"] for f in unsafe] == ["planned-mx-outside-old"]
    assert f"{MAX_AGE} s" in unsafe[0]["message"]
    steps = doc["steps"]
    assert steps[2].startswith(f"3. wait the live policy's max_age ({MAX_AGE} s)")
    assert steps[3].startswith(f"4. change the MX RRset to the planned hosts ({mx2})")
    assert steps[4].startswith(f"5. after the MX records' TTL has passed, drop the old MX "
                               f"hosts from the policy (mx: {mx2})")


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_check_change_without_a_record_is_a_first_publication(lab):
    name = _domain(lab, "first", txt=None)
    r = _check(lab, name, f"mx1.{name}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("verdict: safe (first publication)")
    assert "live policy: none (no _mta-sts record)" in r.stdout
    lines = r.stdout.splitlines()
    policy = next(i for i, x in enumerate(lines) if x.startswith("  1. publish the policy"))
    record = next(i for i, x in enumerate(lines) if x.startswith("  2. then publish"))
    assert policy < record  # the policy is served before the TXT record points at it


@pytest.mark.lab
@pytest.mark.rfc("8461 3.1")
def test_rfc8461_3_1_check_change_body_changed_under_the_live_id_is_exit_1(lab, tmp_path):
    name = _domain(lab, "stale", txt=None)
    mx1, mx2 = f"mx1.{name}", f"mx2.{name}"
    out = smtptls("publish", "mta-sts", "--domain", name, "--mx", mx1, "--mx", mx2,
                  "--mode", "enforce", "--max-age", str(MAX_AGE), "--out", str(tmp_path),
                  "--json")
    assert out.returncode == 0, out.stderr
    new_id = json.loads(out.stdout)["id"]
    # the TXT record already carries the new id while the host still serves the old body
    lab.add(LabDomain(name, mx=[LabMx(mx1)], txt={"_mta-sts": [f"v=STSv1; id={new_id}"]},
                      policy=PolicyHost(body=f"version: STSv1\nmode: enforce\nmx: {mx1}\n"
                                             f"max_age: {MAX_AGE}\n")))
    doc = json.loads(_check(lab, name, mx1, mx2, extra=("--out", str(tmp_path)),
                            json_out=True).stdout)
    assert doc["exit"] == 1 and doc["new"]["id"] == doc["live"]["id"] == new_id
    assert [f["code"] for f in doc["findings"] if f["level"] == "unsafe"] == ["id-unchanged"]


@pytest.mark.lab
@pytest.mark.rfc("8461 3.3")
def test_rfc8461_3_3_check_change_live_policy_not_fetchable_is_exit_2(lab):
    name = _domain(lab, "nofetch", status=404)
    r = _check(lab, name, f"mx1.{name}")
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert "cannot be fetched" in r.stderr and "404" in r.stderr


def test_check_change_needs_a_domain_and_help_has_examples():
    r = smtptls("publish", "mta-sts", "--mx", "mx1.example.com", "--check-change")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--domain" in r.stderr
    r = smtptls("publish", "mta-sts", "--mx", "mx1.example.com", "--planned-mx", "x.example")
    assert r.returncode == 2 and "--check-change" in r.stderr
    h = smtptls("publish", "mta-sts", "--help")
    assert h.returncode == 0 and "--check-change --planned-mx" in h.stdout
    assert "1 tlsa: the advice has an error; --check-change: the change is unsafe" in h.stdout
