"""The renewal hooks in contrib/renewal run for real (POSIX sh): they call
``smtptls tlsa check --next`` and refuse to deploy a certificate whose key the
published TLSA records do not cover yet (RFC 7671 §8.1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from dane_certs import key, make_cert, pki

from smtptls.dane import tlsa_from_cert

ROOT = Path(__file__).resolve().parents[3]
CERTBOT = ROOT / "contrib" / "renewal" / "certbot-smtptls-dane.sh"
ACME = ROOT / "contrib" / "renewal" / "smtptls_dane.sh"
COMMON = ROOT / "contrib" / "renewal" / "smtptls-dane-common.sh"
SMTPTLS = Path(sys.executable).parent / "smtptls"
SH = shutil.which("dash") or shutil.which("sh") or "/bin/sh"
OWNER = "_25._tcp.mx.example.com."


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    p = pki()
    staged_key = key("ec", 21)
    staged = make_cert("mx.example.com", staged_key, p.inter, san=["mx.example.com"],
                       key_usage="ee")
    deployed = tmp_path / "mta-chain.pem"
    deployed.write_bytes(p.leaf.pem + p.inter.pem + p.root.pem)
    lineage = tmp_path / "live" / "mx.example.com"
    lineage.mkdir(parents=True)
    (lineage / "fullchain.pem").write_bytes(staged.pem + p.inter.pem + p.root.pem)
    (lineage / "privkey.pem").write_bytes(staged_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    log = tmp_path / "deployed.log"
    deploy = tmp_path / "deploy.sh"
    deploy.write_text(f'#!/bin/sh\nprintf "%s %s\\n" "$1" "$2" >> "{log}"\n')
    deploy.chmod(0o755)
    old = f"{OWNER} 3600 IN TLSA {tlsa_from_cert(p.leaf.cert).to_text()}\n"
    new = f"{OWNER} 3600 IN TLSA {tlsa_from_cert(staged.cert).to_text()}\n"
    (tmp_path / "old.txt").write_text(old)
    (tmp_path / "both.txt").write_text(old + new)
    return {"dir": tmp_path, "deployed": deployed, "lineage": lineage, "log": log,
            "deploy": deploy, "new_record": Path(new.split(" IN TLSA ")[1].strip())}


def env(s: dict[str, Path], records: str, **extra: str) -> dict[str, str]:
    out = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "HOME": str(s["dir"]), "SMTPTLS": str(SMTPTLS),
           "SMTPTLS_HOOK_CONF": str(s["dir"] / "no-such-conf"),
           "SMTPTLS_DEPLOYED": str(s["deployed"]),
           "SMTPTLS_RECORDS": str(s["dir"] / records), "SMTPTLS_TTL": "3600",
           "SMTPTLS_DEPLOY": str(s["deploy"])}
    out.update(extra)
    return out


def certbot(s: dict[str, Path], records: str) -> subprocess.CompletedProcess[str]:
    e = env(s, records, RENEWED_LINEAGE=str(s["lineage"]),
            RENEWED_DOMAINS="mx.example.com www.example.com")
    return subprocess.run([SH, str(CERTBOT)], env=e, capture_output=True, text=True,
                          timeout=120, check=False)


def acme(s: dict[str, Path], records: str) -> subprocess.CompletedProcess[str]:
    lin = s["lineage"]
    args = ["mx.example.com", str(lin / "privkey.pem"), str(lin / "cert.pem"),
            str(lin / "ca.pem"), str(lin / "fullchain.pem")]
    # As acme.sh does: source the hook from its deploy directory (installed there with
    # the shared steps), then call <name>_deploy with five arguments.
    deploy_dir = s["dir"] / ".acme.sh" / "deploy"
    deploy_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ACME, deploy_dir)
    shutil.copy(COMMON, deploy_dir)
    script = f'. "{deploy_dir / ACME.name}"; smtptls_dane_deploy "$@"'
    return subprocess.run([SH, "-c", script, "acme.sh", *args], env=env(s, records),
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("hook", [certbot, acme], ids=["certbot", "acme.sh"])
def test_rfc7671_8_1_hook_refuses_uncovered_key(setup, hook) -> None:
    r = hook(setup, "old.txt")
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{OWNER} IN TLSA {setup['new_record']}" in r.stdout
    assert "wait at least 7200 s (2 h)" in r.stdout
    assert "refusing to deploy" in r.stderr
    assert not setup["log"].exists()  # the deploy command never ran


@pytest.mark.parametrize("hook", [certbot, acme], ids=["certbot", "acme.sh"])
def test_rfc7671_8_1_hook_deploys_covered_key(setup, hook) -> None:
    r = hook(setup, "both.txt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "both certificates are covered" in r.stdout
    lin = setup["lineage"]
    assert setup["log"].read_text() == f"{lin / 'fullchain.pem'} {lin / 'privkey.pem'}\n"


def test_rfc7671_8_1_certbot_hook_error_is_exit_2(setup) -> None:
    (setup["lineage"] / "fullchain.pem").write_text("not a certificate\n")
    r = certbot(setup, "both.txt")
    assert r.returncode == 2
    assert "not deployed" in r.stderr
    assert not setup["log"].exists()


def test_rfc7671_8_1_acme_hook_run_directly(setup) -> None:
    lin = setup["lineage"]
    r = subprocess.run([SH, str(ACME), "mx.example.com", str(lin / "privkey.pem"), "", "",
                        str(lin / "fullchain.pem")], env=env(setup, "old.txt"),
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1, r.stdout + r.stderr
    assert str(setup["new_record"]) in r.stdout


def test_shared_steps_are_not_a_hook() -> None:
    # certbot runs every executable file in its hook directory: the sourced file is not.
    assert not os.access(COMMON, os.X_OK)


def test_hook_without_shared_steps_is_exit_2(setup, tmp_path: Path) -> None:
    r = subprocess.run([SH, str(CERTBOT)], env=env(
        setup, "both.txt", RENEWED_LINEAGE=str(setup["lineage"]),
        SMTPTLS_HOOK_LIB=str(tmp_path / "missing.sh")),
        capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    assert "cannot read" in r.stderr
    assert not setup["log"].exists()
