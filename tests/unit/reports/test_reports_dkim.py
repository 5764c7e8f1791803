"""DKIM verification of report mail (RFC 8460 §5.3) and the dkimpy s= workaround."""

from __future__ import annotations

import base64
import gzip
import json
from email.message import EmailMessage

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import DnsError, DnsTimeout
from smtptls.net.dkim import rewrite_key_record, signature_keys, verify_report_mail
from smtptls.store.reports_base import DkimStatus

REPORT = {"organization-name": "Sender Inc.", "report-id": "dkim-1",
          "date-range": {"start-datetime": "2024-05-01T00:00:00Z", "end-datetime": "2024-05-01T23:59:59Z"},
          "contact-info": "tlsrpt@sender.example", "policies": []}


@pytest.fixture(scope="module")
def key():
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                          serialization.NoEncryption())
    pub = k.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, base64.b64encode(pub).decode()


def report_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "tlsrpt@sender.example"
    msg["To"] = "tlsrpt@receiver.example"
    msg["Subject"] = "Report Domain: receiver.example Submitter: sender.example Report-ID: <dkim-1>"
    msg["TLS-Report-Domain"] = "receiver.example"
    msg["TLS-Report-Submitter"] = "sender.example"
    msg.set_content("This is an aggregate TLS report from sender.example")
    msg.add_attachment(gzip.compress(json.dumps(REPORT).encode()), maintype="application",
                       subtype="tlsrpt+gzip",
                       filename="sender.example!receiver.example!1714521600!1714607999.json.gz")
    msg.replace_header("Content-Type", msg["Content-Type"].replace("multipart/mixed", "multipart/report")
                       + '; report-type="tlsrpt"')
    return msg.as_bytes().replace(b"\n", b"\r\n")


def sign(raw: bytes, pem: bytes, *, length: bool = False) -> bytes:
    sig = dkim.sign(raw, b"rpt", b"sender.example", pem,
                    include_headers=[b"from", b"to", b"subject", b"tls-report-domain",
                                     b"tls-report-submitter"], length=length)
    return sig + raw


def lookup_from(records: dict[str, list[str]]):
    async def lookup(name: str) -> list[str]:
        value = records.get(name)
        if isinstance(value, Exception):
            raise value
        return list(value or [])
    return lookup


@pytest.mark.rfc("8460 5.3")
@pytest.mark.parametrize(
    "service",
    [pytest.param("s=email:tlsrpt; ", id="email-and-tlsrpt-list"),
     pytest.param("s=tlsrpt; ", id="tlsrpt"),
     pytest.param("s=tlsrpt:email; ", id="tlsrpt-first"),
     pytest.param("", id="no-service-tag")],
)
async def test_rfc8460_5_3_signed_report_passes(key, service):
    pem, pub = key
    raw = sign(report_mail(), pem)
    result = await verify_report_mail(raw, lookup_from(
        {"rpt._domainkey.sender.example": [f"v=DKIM1; k=rsa; {service}p={pub}"]}))
    assert result.status is DkimStatus.PASS, result.reason
    assert result.domain == "sender.example"
    assert result.tlsrpt_service is ("tlsrpt" in service)


@pytest.mark.rfc("8460 5.3")
def test_rfc8460_5_3_dkimpy_alone_rejects_a_service_list(key):
    # The reason for rewrite_key_record: dkimpy 1.1.8 treats s=email:tlsrpt as unknown.
    pem, pub = key
    raw = sign(report_mail(), pem)
    record = f"v=DKIM1; k=rsa; s=email:tlsrpt; p={pub}".encode()
    plain = dkim.verify(raw, dnsfunc=lambda name, timeout=5: record, tlsrpt=True)
    rewritten = rewrite_key_record(record.decode()).encode()
    fixed = dkim.verify(raw, dnsfunc=lambda name, timeout=5: rewritten, tlsrpt=True)
    assert (plain, fixed) == (False, True)


@pytest.mark.parametrize(
    ("records", "mutate", "status"),
    [
        pytest.param(None, lambda raw: raw.replace(b"This is an aggregate", b"This is a forged"),
                     DkimStatus.FAIL, id="forged-body"),
        pytest.param(None, lambda raw: raw.replace(b" Report Domain: receiver", b" Report Domain: attacker"),
                     DkimStatus.FAIL, id="forged-header"),
        pytest.param({"rpt._domainkey.sender.example": []}, None, DkimStatus.PERMERROR, id="no-key-record"),
        pytest.param({"rpt._domainkey.sender.example": DnsTimeout("slow")}, None, DkimStatus.TEMPERROR,
                     id="dns-timeout"),
        pytest.param({"rpt._domainkey.sender.example": DnsError("servfail")}, None, DkimStatus.TEMPERROR,
                     id="dns-error"),
        pytest.param({"rpt._domainkey.sender.example": ["v=DKIM1; k=rsa; s=email:tlsrpt; p=bm9wZQ=="]},
                     None, DkimStatus.FAIL, id="garbage-key"),
    ],
)
async def test_failing_signatures(key, records, mutate, status):
    pem, pub = key
    raw = sign(report_mail(), pem)
    if mutate:
        raw = mutate(raw)
    if records is None:
        records = {"rpt._domainkey.sender.example": [f"v=DKIM1; k=rsa; s=email:tlsrpt; p={pub}"]}
    result = await verify_report_mail(raw, lookup_from(records))
    assert result.status is status
    assert result.reason


@pytest.mark.rfc("8460 5.3")
async def test_rfc8460_5_3_body_length_tag_is_not_honoured(key):
    # RFC 8460 §5.3: signatures MUST NOT use l=; content appended after a signed length
    # therefore breaks the signature instead of hiding behind it.
    pem, pub = key
    raw = sign(report_mail(), pem, length=True) + b"appended by an attacker\r\n"
    result = await verify_report_mail(raw, lookup_from(
        {"rpt._domainkey.sender.example": [f"v=DKIM1; k=rsa; s=tlsrpt; p={pub}"]}))
    assert result.status is DkimStatus.FAIL


async def test_unsigned_mail_is_none():
    result = await verify_report_mail(report_mail(), lookup_from({}))
    assert result.status is DkimStatus.NONE


def test_signature_keys_reads_domain_and_selector(key):
    raw = sign(report_mail(), key[0])
    assert signature_keys(raw) == [("sender.example", "rpt")]
    assert signature_keys(b"\xff\xfe not a message") == []


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        pytest.param("v=DKIM1; s=email:tlsrpt; p=AB", "v=DKIM1; s=tlsrpt; p=AB", id="list-with-tlsrpt"),
        pytest.param("v=DKIM1; s = TLSRPT : email ; p=AB", "v=DKIM1; s=tlsrpt; p=AB", id="spaces-and-case"),
        pytest.param("v=DKIM1; s=email:other; p=AB", "v=DKIM1; s=email; p=AB", id="email-in-list"),
        pytest.param("v=DKIM1; s=*:other; p=AB", "v=DKIM1; s=*; p=AB", id="star-in-list"),
        pytest.param("v=DKIM1; s=other; p=AB", "v=DKIM1; s=other; p=AB", id="unknown-kept"),
        pytest.param("v=DKIM1; p=AB", "v=DKIM1; p=AB", id="no-s-tag-unchanged"),
        pytest.param("v=DKIM1; s=a; s=b; p=AB", "v=DKIM1; s=a; s=b; p=AB", id="duplicate-s-unchanged"),
        pytest.param("garbage without tags", "garbage without tags", id="not-a-tag-list"),
    ],
)
def test_rewrite_key_record(record, expected):
    assert rewrite_key_record(record) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_property_rewrite_never_raises_and_is_idempotent(text):
    once = rewrite_key_record(text)
    assert isinstance(once, str)
    assert rewrite_key_record(once) == once


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_property_signature_keys_never_raises(raw):
    keys = signature_keys(b"DKIM-Signature: " + raw + b"\r\n\r\nbody")
    assert isinstance(keys, list) and len(keys) <= 5


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
async def test_property_verify_never_raises(raw):
    result = await verify_report_mail(raw, lookup_from({}))
    assert result.status in set(DkimStatus)
