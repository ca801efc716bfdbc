"""One exchange at a time: a lease in Redis.

The access log has one writer, so one worker at a time is the exchange. The lease is a
Redis key holding the holder's id with a time to live; the holder renews it, a standby
takes it once it lapses (a killed holder's lapses within ``ttl_ms``). Kafka fences anyway:
every exchange uses the same transactional id, so an instance that lost its lease and
still tries to commit is refused by the broker.
"""

from __future__ import annotations

import os
import socket
import uuid

import redis

__all__ = ["Lease"]

# Renew the lease; if Redis lost it (flushed, restarted empty) and nobody took it since,
# hold it again: a Redis flush must not stop the exchange (Kafka fences a second writer
# in any case, by the shared transactional id).
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class Lease:
    def __init__(self, client: redis.Redis, key: str, ttl_ms: int) -> None:
        self.redis = client
        self.key = key
        self.ttl_ms = ttl_ms
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Take the lease if nobody holds it (or renew it if we do)."""
        if self.redis.set(self.key, self.holder, nx=True, px=self.ttl_ms):
            return True
        return self.renew()

    def renew(self) -> bool:
        """Extend the lease; False if it is no longer ours."""
        return bool(self._renew(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.holder])

    def holder_now(self) -> str | None:
        raw = self.redis.get(self.key)
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)
