"""DANE chain verification throughput: verify_chain calls/s (pure core, one thread).

Run: ``.venv/bin/python benchmarks/bench_dane.py [seconds-per-case]``.
Not part of the test run. Each call parses the chain (DER) from scratch, as a
client does for every new TLS session; ``3 1 1`` is one SPKI digest, ``2 1 1`` also
builds and checks the path (signatures, constraints, dates, names).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
import time
from collections.abc import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from smtptls.dane import TLSARecord, select_usable, verify_chain

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
HOST = "mx.example.com"


def _cert(cn: str, key, issuer_cert=None, issuer_key=None, *, ca: bool, san: str | None = None):
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(days=30))
         .not_valid_after(NOW + dt.timedelta(days=365))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def chain_for(kind: str) -> tuple[list[bytes], list]:
    gen = ((lambda: ec.generate_private_key(ec.SECP256R1())) if kind == "ecdsa-p256" else
           (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    kr, ki, kl = gen(), gen(), gen()
    root = _cert("Root", kr, ca=True)
    inter = _cert("Issuing CA", ki, root, kr, ca=True)
    leaf = _cert(HOST, kl, inter, ki, ca=False, san=HOST)
    return [c.public_bytes(serialization.Encoding.DER) for c in (leaf, inter, root)], \
        [leaf, inter, root]


def spki_sha256(cert) -> bytes:
    return hashlib.sha256(cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).digest()


def rate(func: Callable[[], object], seconds: float) -> float:
    count, batch = 0, 16
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            func()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 1.5
    print(f"smtptls DANE verify_chain benchmark ({seconds:.1f} s per case, one thread)")
    for kind in ("ecdsa-p256", "rsa-2048"):
        ders, certs = chain_for(kind)
        leaf, inter, root = certs
        cases = {
            "3 1 1 (leaf key)": [TLSARecord(3, 1, 1, spki_sha256(leaf))],
            "2 1 1 (issuing CA)": [TLSARecord(2, 1, 1, spki_sha256(inter))],
            "2 1 1 (root, depth 2)": [TLSARecord(2, 1, 1, spki_sha256(root))],
            "3 1 1 miss + 2 1 1": [TLSARecord(3, 1, 1, bytes(32)),
                                   TLSARecord(2, 1, 1, spki_sha256(inter))],
        }
        for name, records in cases.items():
            assert verify_chain(records, ders, [HOST], NOW).ok, name
            r = rate(lambda rs=records, ch=ders: verify_chain(rs, ch, [HOST], NOW), seconds)
            print(f"  {kind:<11} {name:<24} {r:>9,.0f} verifications/s")
    rrset = [TLSARecord(3, 1, 1, bytes(32)), TLSARecord(3, 1, 2, bytes(64)),
             TLSARecord(2, 0, 1, bytes(32)), TLSARecord(1, 1, 1, bytes(32))]
    r = rate(lambda: select_usable(rrset), seconds)
    print(f"  {'select_usable (4 records, agility)':<36} {r:>9,.0f} RRsets/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
