"""Every MTA-STS vector of the shared conformance corpus, run against the pure core.

Sections ``txt_record``, ``policy``, ``mx_match`` and ``content_type`` of
``vectors/mtasts_tlsrpt_conformance.json``. Where sources disagree (``disputed``), the
vector's ``consensus`` decides; docs/conformance.md lists those choices.
"""

from __future__ import annotations

import json
import re

import pytest

from smtptls.errors import PolicySyntaxError, StsRecordError
from smtptls.mtasts import (
    Mode,
    Policy,
    StsRecord,
    is_text_plain,
    mx_matches,
    parse_policy,
    parse_txt_records,
)
from tests.conftest import corpus_params

VECTORS = "vectors/mtasts_tlsrpt_conformance.json"  # below the corpus folder


def _id(index: int, vector: dict) -> str:
    label = vector.get("reason") or vector.get("note") or ("valid" if vector.get("valid") else "")
    if vector.get("disputed"):
        label = "disputed " + label
    label = re.sub(r"[^A-Za-z0-9]+", "-", str(label)).strip("-")[:50]
    return f"{index:02d}-{label or 'vector'}"


def _params(section: str) -> list:
    """One parameter per vector of ``section``; needed at collection, before fixtures, so
    read through ``corpus_params`` (a placeholder the ``corpus`` fixture skips if absent)."""
    def build(corpus):
        vectors = json.loads((corpus / VECTORS).read_text(encoding="utf-8"))[section]
        return [pytest.param(v, id=_id(i, v)) for i, v in enumerate(vectors)]
    return corpus_params(build)


def _expected_valid(vector: dict) -> bool:
    if vector.get("disputed"):
        return vector["consensus"]["valid"]
    return vector["valid"]


def _expected_fields(vector: dict) -> dict | None:
    if vector.get("disputed"):
        return vector["consensus"].get("parsed")
    return vector.get("expected")


def test_corpus_sections_are_present(corpus):
    data = json.loads((corpus / VECTORS).read_text())
    for section in ("txt_record", "policy", "mx_match", "content_type"):
        assert len(data[section]) == data["meta"]["counts"][section]
        assert data[section], section


@pytest.mark.rfc("8461 3.1")
@pytest.mark.parametrize("vector", _params("txt_record"))
def test_rfc8461_3_1_corpus_txt_record(corpus, vector):
    text = vector["input"]
    if _expected_valid(vector):
        record = parse_txt_records([text])
        assert isinstance(record, StsRecord)
        assert StsRecord.parse(text) == record
        fields = _expected_fields(vector) or {}
        if "v" in fields:
            assert fields["v"] == record.version
        if "id" in fields:
            assert record.id == fields["id"]
        if "extensions" in fields:
            assert [list(p) for p in record.extensions] == fields["extensions"]
        assert StsRecord.parse(record.to_text()) == record
    else:
        # On its own the text is never a valid record ...
        with pytest.raises(StsRecordError):
            StsRecord.parse(text)
        # ... and in a TXT answer it yields no policy: either the record is discarded
        # (it does not begin with v=STSv1, so None = "no MTA-STS record"), or it is a
        # v=STSv1 candidate that fails to parse (StsRecordError = "no available policy").
        try:
            result = parse_txt_records([text])
        except StsRecordError:
            result = None
        assert result is None


@pytest.mark.rfc("8461 3.2")
@pytest.mark.parametrize("vector", _params("policy"))
def test_rfc8461_3_2_corpus_policy(corpus, vector):
    text = vector["input"]
    if _expected_valid(vector):
        policy = parse_policy(text)
        fields = _expected_fields(vector) or {}
        if "version" in fields:
            assert policy.version == fields["version"]
        if "mode" in fields:
            assert policy.mode is Mode(fields["mode"])
        if "max_age" in fields:
            assert policy.max_age == fields["max_age"]
        if "mx" in fields:
            assert list(policy.mx) == fields["mx"]
        if "extensions" in fields:
            assert [list(p) for p in policy.extensions] == fields["extensions"]
        assert parse_policy(policy.to_text()) == policy
    else:
        with pytest.raises(PolicySyntaxError):
            parse_policy(text)


@pytest.mark.rfc("8461 4.1")
@pytest.mark.parametrize("vector", _params("mx_match"))
def test_rfc8461_4_1_corpus_mx_match(corpus, vector):
    policy = Policy("STSv1", Mode.ENFORCE, 86400, tuple(vector["policy_mx"]))
    assert policy.matches_mx(vector["host"]) is vector["match"]
    assert any(mx_matches(p, vector["host"]) for p in vector["policy_mx"]) is vector["match"]


@pytest.mark.rfc("8461 3.3")
@pytest.mark.parametrize("vector", _params("content_type"))
def test_rfc8461_3_3_corpus_content_type(corpus, vector):
    assert is_text_plain(vector["content_type"]) is vector["is_text_plain"]
