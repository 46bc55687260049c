"""TokenReview and SubjectAccessReview through the injected client, with their TTL caches."""

from __future__ import annotations

import threading

import pytest

from galpipe.control.auth import Authenticator, Authorizer, TTLCache
from galpipe.control.kube import Identity, KubeError
from tests.kube_fake import FakeKube

ALICE = Identity("alice", ("ops",), uid="1", extra={"scopes": ("a", "b")})


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(tokens={"alice-token": ALICE}, grants={"ops": ["pause", "get"]})


def test_authenticate_maps_the_review_and_caches_by_token(kube: FakeKube) -> None:
    clock = [0.0]
    auth = Authenticator(kube, ttl_s=5, clock=lambda: clock[0])
    assert auth.authenticate("alice-token") == ALICE
    assert auth.authenticate("alice-token") == ALICE
    assert auth.authenticate("wrong") is None
    assert auth.authenticate("wrong") is None  # a rejection is cached as well
    assert auth.authenticate("") is None  # never reviewed
    assert len(kube.token_reviews) == 2
    clock[0] = 5.0
    auth.authenticate("alice-token")
    assert len(kube.token_reviews) == 3


def test_the_token_cache_holds_no_token(kube: FakeKube) -> None:
    auth = Authenticator(kube)
    auth.authenticate("alice-token")
    assert "alice-token" not in repr(auth._cache._entries)


def test_errors_are_raised_and_not_cached(kube: FakeKube) -> None:
    auth = Authenticator(kube)
    kube.errors["create_token_review"] = KubeError(503, "down")
    with pytest.raises(KubeError):
        auth.authenticate("alice-token")
    del kube.errors["create_token_review"]
    assert auth.authenticate("alice-token") == ALICE


def test_authorizer_caches_per_identity_verb_and_namespace(kube: FakeKube) -> None:
    clock = [0.0]
    authz = Authorizer(kube, "galpipe", ttl_s=10, clock=lambda: clock[0])
    assert authz.allowed(ALICE, "pause")
    assert authz.allowed(ALICE, "pause")
    assert not authz.allowed(ALICE, "rollback")
    assert authz.allowed(ALICE, "pause", "other")
    other = Identity("bob", ("ops",))
    assert authz.allowed(other, "pause")
    assert len(kube.access_reviews) == 4
    (first, *_) = kube.access_reviews
    assert first.body is not None
    assert first.body["spec"]["extra"] == {"scopes": ["a", "b"]}
    clock[0] = 10.0
    authz.allowed(ALICE, "pause")
    assert len(kube.access_reviews) == 5


def test_concurrent_misses_make_one_review() -> None:
    calls = []
    release = threading.Event()
    cache: TTLCache[int] = TTLCache(10)

    def compute() -> int:
        calls.append(1)
        release.wait(2)
        return 7

    results = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get_or_compute("k", compute)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(cached for _, cached in results) == [False] + [True] * 7


def test_cache_is_bounded() -> None:
    cache: TTLCache[int] = TTLCache(10, max_entries=3)
    for i in range(5):
        cache.put(i, i)
    assert len(cache) == 3
    assert cache.get(0) == (False, None)
    assert cache.get(4) == (True, 4)
