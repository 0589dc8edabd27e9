"""A rate limit per LLM endpoint that every worker of the cluster shares.

Two token buckets per endpoint, taken together or not at all:

* **requests per second**: holds one second's worth (at least one request), refills continuously;
* **tokens per minute**: holds one minute's worth; a call takes its estimated tokens (prompt
  characters / 4, plus ``max_tokens`` or 256) before it is sent, and the difference to the
  usage the server reports is settled afterwards (a bucket may go into debt).

So over any window of ``w`` seconds an endpoint sees at most ``capacity + rate * w`` requests,
whichever worker sends them.

Where the buckets live (``MODELQ_LLM_RATE_LIMIT_STORE``, default ``auto``):

* **Redis** — the broker when it is Redis (the embedded one included), else a Redis result
  backend (RabbitMQ + Redis results). One Lua script per acquisition, on Redis's own clock.
* **the job store's database** — otherwise (RabbitMQ with no Redis at all): one conditional
  ``UPDATE`` per acquisition on a small table, on the workers' clocks (keep them in NTP sync).

Within a process, one thread at a time asks the store for a given endpoint (the others queue on
a lock), so a worker holds at most one store connection per limited endpoint however many calls
it has in flight.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, urlsplit, urlunsplit

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from modelq.config import LLMEndpoint, Settings

#: Completion tokens assumed when a job sets no ``max_tokens``.
DEFAULT_COMPLETION_ESTIMATE = 256


@dataclass(frozen=True)
class Limits:
    """Refill rates (per second) and capacities; a rate of 0 means that bucket is not limited."""

    request_rate: float = 0.0
    request_capacity: float = 1.0
    token_rate: float = 0.0
    token_capacity: float = 1.0

    @classmethod
    def for_endpoint(cls, endpoint: LLMEndpoint) -> Limits | None:
        rps, tpm = endpoint.requests_per_second, endpoint.tokens_per_minute
        if not rps and not tpm:
            return None
        return cls(
            request_rate=float(rps or 0.0),
            request_capacity=max(1.0, float(rps or 1.0)),
            token_rate=(tpm or 0) / 60.0,
            token_capacity=float(tpm or 1),
        )

    def costs(self, tokens: int) -> tuple[float, float]:
        """What one call takes from each bucket (never more than a bucket holds, or it would never fit)."""
        request_cost = 1.0 if self.request_rate else 0.0
        token_cost = min(float(tokens), self.token_capacity) if self.token_rate else 0.0
        return request_cost, token_cost

    def ttl_ms(self) -> int:
        """How long an untouched bucket is kept: long enough to refill completely, and a minute more."""
        refill = max(
            self.request_capacity / self.request_rate if self.request_rate else 0.0,
            self.token_capacity / self.token_rate if self.token_rate else 0.0,
        )
        return int((refill + 60.0) * 1000)


def estimate_tokens(messages: list[dict[str, Any]], max_tokens: int | None) -> int:
    """A call's tokens before the server counts them: ~4 characters a token, plus the completion budget."""
    chars = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(part.get("text", ""))) for part in content if isinstance(part, dict))
    return chars // 4 + 4 * len(messages) + (max_tokens or DEFAULT_COMPLETION_ESTIMATE)


class BucketStore(Protocol):
    def take(self, key: str, limits: Limits, request_cost: float, token_cost: float) -> float:
        """Take both costs and return 0, or take nothing and return the seconds until they would fit."""

    def settle(self, key: str, token_delta: float) -> None:
        """Take ``token_delta`` more tokens (give back when negative)."""


# Redis --------------------------------------------------------------------------------------

_TAKE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local req_rate, req_cap, req_cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tok_rate, tok_cap, tok_cost = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HMGET', KEYS[1], 'req', 'tok', 'ts')
local elapsed = math.max(0, now - (tonumber(state[3]) or now))
local req, tok = req_cap, tok_cap
if state[1] then req = math.min(req_cap, tonumber(state[1]) + elapsed * req_rate) end
if state[2] then tok = math.min(tok_cap, tonumber(state[2]) + elapsed * tok_rate) end
local wait = 0
if req_rate > 0 and req < req_cost then wait = math.max(wait, (req_cost - req) / req_rate) end
if tok_rate > 0 and tok < tok_cost then wait = math.max(wait, (tok_cost - tok) / tok_rate) end
if wait == 0 then
  req = req - req_cost
  tok = tok - tok_cost
end
redis.call('HSET', KEYS[1], 'req', string.format('%.6f', req), 'tok', string.format('%.6f', tok),
           'ts', string.format('%.6f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return string.format('%.6f', wait)
"""

_SETTLE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBYFLOAT', KEYS[1], 'tok', ARGV[1])
end
return 0
"""


def redis_client(url: str) -> Any:
    """A redis-py client for a kombu-style Redis URL (``redis+socket:///path`` included)."""
    import redis

    parts = urlsplit(url)
    if parts.scheme == "redis+socket":
        db = parse_qs(parts.query).get("virtual_host", ["0"])[0] or "0"
        return redis.Redis(unix_socket_path=parts.path, db=int(db.strip("/") or 0), socket_timeout=10)
    # kombu's own query options (e.g. ?visibility_timeout=) mean nothing to redis-py.
    return redis.Redis.from_url(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")), socket_timeout=10)


class RedisBuckets:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client = redis_client(url)
        self._take = self._client.register_script(_TAKE_LUA)
        self._settle = self._client.register_script(_SETTLE_LUA)

    def take(self, key: str, limits: Limits, request_cost: float, token_cost: float) -> float:
        args = [
            limits.request_rate,
            limits.request_capacity,
            request_cost,
            limits.token_rate,
            limits.token_capacity,
            token_cost,
            limits.ttl_ms(),
        ]
        return float(self._take(keys=[key], args=[repr(float(a)) if isinstance(a, float) else a for a in args]))

    def settle(self, key: str, token_delta: float) -> None:
        self._settle(keys=[key], args=[repr(-float(token_delta))])


# The job store's database -------------------------------------------------------------------

_TABLE = "modelq_llm_rate_buckets"
_LEVEL = "CASE WHEN {col} + {elapsed} * :{rate} > :{cap} THEN :{cap} ELSE {col} + {elapsed} * :{rate} END"
_ELAPSED = "(CASE WHEN :now > ts THEN :now - ts ELSE 0 END)"


class DatabaseBuckets:
    """Buckets as rows of one table; every take is a single conditional UPDATE (atomic on SQLite and PostgreSQL).

    The table is the job store's (Alembic revision 0004): ``engine`` is a migrated store's engine.
    """

    def __init__(self, engine: Engine) -> None:
        from sqlalchemy import text

        self.engine = engine
        req = _LEVEL.format(col="req", elapsed=_ELAPSED, rate="req_rate", cap="req_cap")
        tok = _LEVEL.format(col="tok", elapsed=_ELAPSED, rate="tok_rate", cap="tok_cap")
        self._take_sql = text(
            f"UPDATE {_TABLE} SET req = {req} - :req_cost, tok = {tok} - :tok_cost, ts = :now "
            f"WHERE bucket = :key AND {req} >= :req_cost AND {tok} >= :tok_cost"
        )
        self._read_sql = text(f"SELECT req, tok, ts FROM {_TABLE} WHERE bucket = :key")
        self._insert_sql = text(f"INSERT INTO {_TABLE} (bucket, req, tok, ts) VALUES (:key, :req, :tok, :now)")
        self._settle_sql = text(f"UPDATE {_TABLE} SET tok = tok - :delta WHERE bucket = :key")
        self._known: set[str] = set()

    def _ensure_row(self, key: str, limits: Limits) -> None:
        if key in self._known:
            return
        from sqlalchemy.exc import IntegrityError

        with self.engine.begin() as conn:
            exists = conn.execute(self._read_sql, {"key": key}).first() is not None
        if not exists:
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        self._insert_sql,
                        {"key": key, "req": limits.request_capacity, "tok": limits.token_capacity, "now": time.time()},
                    )
            except IntegrityError:
                pass  # another worker inserted it first
        self._known.add(key)

    def take(self, key: str, limits: Limits, request_cost: float, token_cost: float) -> float:
        self._ensure_row(key, limits)
        now = time.time()
        params = {
            "key": key,
            "now": now,
            "req_rate": limits.request_rate,
            "req_cap": limits.request_capacity,
            "tok_rate": limits.token_rate,
            "tok_cap": limits.token_capacity,
            "req_cost": request_cost,
            "tok_cost": token_cost,
        }
        with self.engine.begin() as conn:
            if conn.execute(self._take_sql, params).rowcount == 1:
                return 0.0
            row = conn.execute(self._read_sql, {"key": key}).first()
        if row is None:  # deleted under us: start over
            self._known.discard(key)
            return 0.001
        elapsed = max(0.0, now - float(row.ts))
        wait = 0.0
        if limits.request_rate:
            level = min(limits.request_capacity, float(row.req) + elapsed * limits.request_rate)
            wait = max(wait, (request_cost - level) / limits.request_rate)
        if limits.token_rate:
            level = min(limits.token_capacity, float(row.tok) + elapsed * limits.token_rate)
            wait = max(wait, (token_cost - level) / limits.token_rate)
        return max(wait, 0.001)

    def settle(self, key: str, token_delta: float) -> None:
        with self.engine.begin() as conn:
            conn.execute(self._settle_sql, {"key": key, "delta": float(token_delta)})


# The limiter ----------------------------------------------------------------------------------


class RateLimiter:
    """The shared budget of one endpoint, as seen from this process."""

    def __init__(self, store: BucketStore, key: str, limits: Limits) -> None:
        self.store = store
        self.key = key
        self.limits = limits
        self._lock = threading.Lock()

    def acquire(self, tokens: int, stop: threading.Event | None = None) -> bool:
        """Block until one call of ``tokens`` estimated tokens may go out.

        Returns:
            True when it may; False when ``stop`` was set while waiting (nothing was taken).
        """
        request_cost, token_cost = self.limits.costs(tokens)
        with self._lock:
            while True:
                if stop is not None and stop.is_set():
                    return False
                wait = self.store.take(self.key, self.limits, request_cost, token_cost)
                if wait <= 0:
                    return True
                # Wake a hair after the bucket refills, not before (a too-early retry is wasted).
                if stop is not None:
                    stop.wait(wait + 0.0005)
                else:
                    time.sleep(wait + 0.0005)

    def settle(self, estimated: int, actual: int | None) -> None:
        """Correct the token bucket once the server reported what the call really used."""
        if not self.limits.token_rate or actual is None or actual == estimated:
            return
        capacity = self.limits.token_capacity
        self.store.settle(self.key, min(float(actual), capacity) - min(float(estimated), capacity))


_limiters: dict[tuple, RateLimiter] = {}
_stores: dict[tuple, BucketStore] = {}
_guard = threading.Lock()
_pid = os.getpid()


def redis_url_for(settings: Settings) -> str | None:
    """The Redis the cluster shares: the broker if it is Redis, else a Redis result backend."""
    from modelq.broker import broker_url, is_redis_url, result_backend_url

    for url in (broker_url(settings), result_backend_url(settings)):
        if is_redis_url(url):
            return url
    return None


def limiter_for(settings: Settings, name: str, endpoint: LLMEndpoint, engine: Engine | None) -> RateLimiter | None:
    """This process's limiter for an endpoint, or None when the endpoint has no rate limit.

    Args:
        engine: the job store's engine, used when the buckets live in the database.
    """
    limits = Limits.for_endpoint(endpoint)
    if limits is None:
        return None
    kind = settings.llm.rate_limit_store
    url = redis_url_for(settings) if kind in ("auto", "redis") else None
    if kind == "redis" and url is None:
        from modelq.errors import ConfigError

        raise ConfigError(
            "MODELQ_LLM_RATE_LIMIT_STORE", "is 'redis' but neither the broker nor the result backend is Redis"
        )
    digest = hashlib.sha1(endpoint.base_url.encode()).hexdigest()[:10]
    key = f"modelq:llm:ratelimit:{name}:{digest}"
    store_key: tuple = ("redis", url) if url else ("database", str(engine.url) if engine is not None else None)
    global _pid
    with _guard:
        if _pid != os.getpid():  # a forked child never reuses its parent's connections
            _pid = os.getpid()
            _limiters.clear()
            _stores.clear()
        store = _stores.get(store_key)
        if store is None:
            if url:
                store = RedisBuckets(url)
            else:
                if engine is None:
                    raise RuntimeError("the database rate limit store needs the job store's engine")
                store = DatabaseBuckets(engine)
            _stores[store_key] = store
        cache_key = (store_key, key, limits)
        limiter = _limiters.get(cache_key)
        if limiter is None:
            limiter = _limiters[cache_key] = RateLimiter(store, key, limits)
    return limiter
