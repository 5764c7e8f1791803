"""The smtptls test lab: DNSSEC-signed zones (NSD), a validating resolver (Unbound),
a lab CA, HTTPS MTA-STS policy hosts, STARTTLS receivers and a sending Postfix, all on
one loopback /16. See README.md beside this file and API.md for the contract."""

from .lab import Lab
from .model import CertKind, LabDomain, LabError, LabMx, LabZone, PolicyHost, ZoneKind
from .pki import CertChain
from .servers import LabMessage, PolicyRequest

__all__ = [
    "CertChain",
    "CertKind",
    "Lab",
    "LabDomain",
    "LabError",
    "LabMessage",
    "LabMx",
    "LabZone",
    "PolicyHost",
    "PolicyRequest",
    "ZoneKind",
]
