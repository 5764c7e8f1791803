"""Unit tests for the policy cache codec, the LRU and CachedStore (no servers)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtptls.errors import StoreError
from smtptls.mtasts import CachedPolicy, Mode, Policy
from smtptls.store import CachedStore, LruCache, cache_key, codec

POLICY = Policy(version="STSv1", mode=Mode.ENFORCE, max_age=86400,
                mx=("mx1.example.com", "*.mx.example.com"))
ENTRY = CachedPolicy(POLICY, "20240101", 1_700_000_000.0, 1_700_086_400.0, 1_700_000_500.0)


# --- codec ---------------------------------------------------------------------------------


def test_codec_round_trip():
    raw = codec.encode(ENTRY)
    data = json.loads(raw)
    assert data["policy_id"] == "20240101" and data["format"] == 1
    assert "mx: *.mx.example.com" in data["policy"]
    assert codec.decode(raw) == ENTRY


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[]",
        '{"format": 2}',
        '{"format": 1, "policy": 5, "policy_id": "1"}',
        json.dumps({**codec.to_dict(ENTRY), "policy": "version: STSv2\n"}),
        json.dumps({**codec.to_dict(ENTRY), "policy_id": "bad id!"}),
        json.dumps({**codec.to_dict(ENTRY), "fetched_at": "yesterday"}),
        json.dumps({**codec.to_dict(ENTRY), "expires_at": True}),
        json.dumps({**codec.to_dict(ENTRY), "expires_at": 1.0}),
        "[" * 100_000,
        "x" * 300_000,
    ],
    ids=["not-json", "not-object", "future-format", "policy-not-string", "bad-policy",
         "bad-id", "time-not-number", "time-bool", "expires-before-fetch", "deep-nesting",
         "oversized"],
)
def test_codec_rejects_damaged_entries_with_store_error(raw):
    with pytest.raises(StoreError):
        codec.decode(raw)


def test_codec_encode_rejects_other_types():
    with pytest.raises(StoreError):
        codec.encode({"policy": "x"})


_mx = st.from_regex(r"(\*\.)?[a-z][a-z0-9]{0,8}\.[a-z]{2,6}", fullmatch=True)
_policy = st.builds(
    Policy,
    version=st.just("STSv1"),
    mode=st.sampled_from([Mode.ENFORCE, Mode.TESTING]),
    max_age=st.integers(0, 31557600),
    mx=st.lists(_mx, min_size=1, max_size=5).map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(_policy, st.from_regex(r"[A-Za-z0-9]{1,32}", fullmatch=True),
       st.floats(0, 4e9), st.floats(0, 1e6))
def test_codec_property_round_trip(policy, policy_id, fetched_at, age):
    entry = CachedPolicy(policy, policy_id, fetched_at, fetched_at + policy.max_age,
                         fetched_at + age)
    assert codec.decode(codec.encode(entry)) == entry


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(["format", "policy", "policy_id",
                                                  "fetched_at", "expires_at",
                                                  "last_checked"]),
                                 st.one_of(st.integers(), st.text(max_size=20),
                                           st.floats(), st.none())).map(json.dumps)))
def test_codec_decode_only_typed_errors(raw):
    try:
        entry = codec.decode(raw)
    except StoreError:
        return
    assert codec.decode(codec.encode(entry)) == entry


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain, key", [("Example.COM.", "example.com"), (" a.b ", "a.b")])
def test_cache_key_normalizes(domain, key):
    assert cache_key(domain) == key


@pytest.mark.parametrize("domain", ["", ".", "a" * 254], ids=["empty", "dot", "too-long"])
def test_cache_key_rejects(domain):
    with pytest.raises(StoreError):
        cache_key(domain)


# --- LRU -------------------------------------------------------------------------------------


def test_lru_evicts_least_recently_used():
    lru: LruCache[str, int] = LruCache(3)
    for i, k in enumerate("abc"):
        lru.put(k, i)
    assert lru.get("a") == 0  # a is now most recent
    lru.put("d", 3)  # evicts b
    assert "b" not in lru and lru.keys() == ["c", "a", "d"]
    assert len(lru) == 3
    assert (lru.hits, lru.misses) == (1, 0)
    assert lru.get("b") is None and lru.misses == 1


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 20), st.lists(st.tuples(st.sampled_from("put get pop".split()),
                                              st.integers(0, 30)), max_size=200))
def test_lru_never_exceeds_bound(size, ops):
    lru: LruCache[int, int] = LruCache(size)
    model: dict[int, int] = {}
    for op, key in ops:
        if op == "put":
            lru.put(key, key * 2)
            model[key] = key * 2
        elif op == "get":
            value = lru.get(key)
            assert value is None or value == model[key]
        else:
            lru.pop(key)
            model.pop(key, None)
        assert len(lru) <= size


def test_lru_size_zero_stores_nothing_and_negative_rejected():
    lru: LruCache[str, int] = LruCache(0)
    lru.put("a", 1)
    assert len(lru) == 0 and lru.get("a") is None
    with pytest.raises(StoreError):
        LruCache(-1)


class _MemoryBackend:
    """A minimal PolicyCache double that counts backend reads."""

    def __init__(self, fail_put: bool = False) -> None:
        self.data: dict[str, CachedPolicy] = {}
        self.reads = 0
        self.fail_put = fail_put

    async def get(self, domain):
        self.reads += 1
        return self.data.get(domain)

    async def put(self, domain, cached):
        if self.fail_put:
            raise StoreError("backend down")
        self.data[domain] = cached

    async def delete(self, domain):
        return self.data.pop(domain, None) is not None

    async def list_domains(self):
        return sorted(self.data)

    async def iter_all(self):
        for k in sorted(self.data):
            yield k, self.data[k]

    async def close(self):
        self.data.clear()


async def test_cached_store_reads_memory_first():
    backend = _MemoryBackend()
    store = CachedStore(backend, lru_size=2)
    await store.put("Example.com", ENTRY)
    assert await store.get("example.com.") == ENTRY
    assert backend.reads == 0  # served from memory
    store.lru.clear()
    assert await store.get("example.com") == ENTRY
    assert backend.reads == 1
    assert await store.get("example.com") == ENTRY
    assert backend.reads == 1  # filled on miss
    assert await store.list_domains() == ["example.com"]
    assert [k async for k, _ in store.iter_all()] == ["example.com"]
    assert await store.delete("example.com") is True
    assert await store.get("example.com") is None
    await store.close()


async def test_cached_store_bounded():
    store = CachedStore(_MemoryBackend(), lru_size=2)
    for name in ("a.example", "b.example", "c.example"):
        await store.put(name, ENTRY)
    assert len(store.lru) == 2 and "a.example" not in store.lru


async def test_cached_store_failed_write_not_served_from_memory():
    store = CachedStore(_MemoryBackend(fail_put=True), lru_size=10)
    with pytest.raises(StoreError):
        await store.put("a.example", ENTRY)
    assert "a.example" not in store.lru
