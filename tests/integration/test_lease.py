"""The exchange's lease in Redis survives a flush; it is never taken from another holder."""

from __future__ import annotations

import uuid

import redis

from streams.exchange.lease import Lease
from xiangyun.settings import Settings


def test_a_flushed_lease_is_held_again_and_a_taken_one_is_not(base_settings: Settings) -> None:
    client = redis.Redis.from_url(base_settings.redis_url)
    key = f"it-lease-{uuid.uuid4().hex[:8]}"
    ours = Lease(client, key, ttl_ms=10_000)
    try:
        assert ours.acquire() and ours.holder_now() == ours.holder
        client.delete(key)  # Redis flushed or restarted empty
        assert ours.renew(), "nobody took it since: still ours"
        assert ours.holder_now() == ours.holder
        client.set(key, "another-worker", px=10_000)  # another worker took it
        assert not ours.renew()
        assert ours.holder_now() == "another-worker"
        other = Lease(client, key, ttl_ms=10_000)
        assert not other.acquire(), "a held lease is not taken"
    finally:
        client.delete(key)
