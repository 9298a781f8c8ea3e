"""An asyncio client of etcd's v3 JSON gateway: the few calls a Usagi cluster needs.

etcd coordinates a cluster (leases, election, the in-sync replica set, the node registry) and
never sees a message, so the client is small: KV range/put/delete/txn, leases, the election
service and watches, over etcd's gRPC gateway (`POST /v3/...` with JSON bodies; keys and values
base64, 64-bit integers as strings). The Python etcd libraries are either unmaintained, synchronous
or bound to one endpoint; this one takes several endpoints and fails over between them.

Errors: `EtcdUnavailable` when no endpoint answers (connection refused, timeout, 5xx from every
one of them); `EtcdError` when an endpoint answered with an error (its gRPC code and message are
kept, e.g. 9 "lease already exists"). A call is retried on the next endpoint only when it is safe
to: reads always, writes only when the request never reached an endpoint (connection refused).
A write whose answer was lost may or may not have happened, as with any remote call: callers use
fenced transactions (`txn`) where that matters.
"""
from __future__ import annotations

import asyncio
import base64
import bisect
import json
import logging
import random
from dataclasses import dataclass

import aiohttp

log = logging.getLogger("usagi.cluster.etcd")

# gRPC status codes etcd answers with (google.golang.org/grpc/codes)
NOT_FOUND = 5
ALREADY_EXISTS = 6
FAILED_PRECONDITION = 9
UNAVAILABLE = 14


class EtcdError(Exception):
    """etcd answered with an error."""

    def __init__(self, message: str, code: int = 0, status: int = 0):
        super().__init__(message)
        self.code = code
        self.status = status


class EtcdUnavailable(EtcdError):
    """No endpoint answered."""


def b64(v: str | bytes) -> str:
    if isinstance(v, str):
        v = v.encode()
    return base64.b64encode(v).decode("ascii")


def unb64(v: str | None) -> bytes:
    return base64.b64decode(v) if v else b""


def prefix_end(key: bytes) -> bytes:
    """The range end that makes `key` a prefix (etcd's convention: the key with its last byte + 1)."""
    k = bytearray(key)
    for i in range(len(k) - 1, -1, -1):
        if k[i] < 0xFF:
            k[i] += 1
            return bytes(k[:i + 1])
    return b"\x00"          # every key


@dataclass
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0

    @classmethod
    def from_json(cls, d: dict) -> "KeyValue":
        return cls(unb64(d.get("key")), unb64(d.get("value")), int(d.get("create_revision", 0)),
                   int(d.get("mod_revision", 0)), int(d.get("version", 0)), int(d.get("lease", 0)))

    def json(self):
        return json.loads(self.value)


@dataclass
class LeaderKey:
    """What a won election hands back: the campaign's own key. Its create revision is the epoch."""
    name: bytes
    key: bytes
    rev: int
    lease: int

    def as_json(self) -> dict:
        return {"name": b64(self.name), "key": b64(self.key), "rev": str(self.rev), "lease": str(self.lease)}


@dataclass
class WatchEvent:
    type: str            # "PUT" or "DELETE"
    kv: KeyValue


@dataclass
class TxnResult:
    succeeded: bool
    responses: list
    revision: int


# ---------------------------------------------------------------------------------------- txn parts

def cmp_create_revision(key: str | bytes, rev: int, result: str = "EQUAL") -> dict:
    return {"key": b64(key), "target": "CREATE", "result": result, "create_revision": str(rev)}


def cmp_mod_revision(key: str | bytes, rev: int, result: str = "EQUAL") -> dict:
    return {"key": b64(key), "target": "MOD", "result": result, "mod_revision": str(rev)}


def cmp_lease(key: str | bytes, lease: int, result: str = "EQUAL") -> dict:
    return {"key": b64(key), "target": "LEASE", "result": result, "lease": str(lease)}


def cmp_value(key: str | bytes, value: str | bytes, result: str = "EQUAL") -> dict:
    return {"key": b64(key), "target": "VALUE", "result": result, "value": b64(value)}


def op_put(key: str | bytes, value: str | bytes, lease: int = 0) -> dict:
    d = {"key": b64(key), "value": b64(value)}
    if lease:
        d["lease"] = str(lease)
    return {"request_put": d}


def op_get(key: str | bytes, prefix: bool = False) -> dict:
    d = {"key": b64(key)}
    if prefix:
        d["range_end"] = b64(prefix_end(key.encode() if isinstance(key, str) else key))
    return {"request_range": d}


def op_delete(key: str | bytes) -> dict:
    return {"request_delete_range": {"key": b64(key)}}


# ---------------------------------------------------------------------------------------- client

RTT_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)     # seconds
CAMPAIGN = "/v3/election/campaign"


class EtcdClient:
    """Several endpoints (`http://host:port`), one in use at a time; the next one on failure."""

    def __init__(self, endpoints: list[str], timeout: float = 2.0):
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = [e.rstrip("/") if "://" in e else "http://" + e.rstrip("/") for e in endpoints]
        random.shuffle(self.endpoints)
        self.current = 0
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0              # requests sent (for tests and metrics)
        self.last_rtt = 0.0         # seconds of the last successful unary call
        # round trips of the successful unary calls (the campaign, which waits to be elected, is
        # not one): a cumulative histogram over RTT_BOUNDS, its sum and count (Prometheus)
        self.rtt_bounds = RTT_BOUNDS
        self.rtt_buckets = [0] * (len(RTT_BOUNDS) + 1)
        self.rtt_sum = 0.0

    @property
    def endpoint(self) -> str:
        return self.endpoints[self.current % len(self.endpoints)]

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # one connection per endpoint is plenty; keep them alive between calls
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=8, force_close=False),
                json_serialize=json.dumps)
        return self._session

    async def close(self):
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post_once(self, endpoint: str, path: str, body: dict, timeout: float) -> dict:
        self.calls += 1
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        async with self._sess().post(endpoint + path, json=body,
                                     timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            text = await resp.text()
            status = resp.status
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            data = {"error": text.strip(), "code": 0}
        if status >= 500 or (isinstance(data, dict) and data.get("code") == UNAVAILABLE):
            raise _Retryable(f"{endpoint}: HTTP {status}: {data.get('error') if isinstance(data, dict) else text}")
        if status != 200 or (isinstance(data, dict) and "error" in data):
            raise EtcdError(f"etcd {path}: {data.get('error') or data.get('message') or status}",
                            int(data.get("code") or 0), status)
        rtt = self.last_rtt = loop.time() - t0
        if path != CAMPAIGN:
            self.rtt_buckets[bisect.bisect_left(RTT_BOUNDS, rtt)] += 1
            self.rtt_sum += rtt
        return data

    async def call(self, path: str, body: dict, *, idempotent: bool = True, timeout: float | None = None) -> dict:
        """POST to the current endpoint, failing over to the others (see the module docstring)."""
        timeout = self.timeout if timeout is None else timeout
        errors = []
        n = len(self.endpoints)
        for i in range(n):
            ep = self.endpoints[(self.current + i) % n]
            try:
                data = await self._post_once(ep, path, body, timeout)
                self.current = (self.current + i) % n
                return data
            except EtcdError:
                raise
            except aiohttp.ClientConnectorError as e:      # never reached the endpoint: always safe
                errors.append(f"{ep}: {e.os_error or e}")
            except (_Retryable, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                errors.append(f"{ep}: {type(e).__name__} {e}")
                if not idempotent:
                    self.current = (self.current + i + 1) % n
                    raise EtcdUnavailable(f"etcd {path}: no answer ({'; '.join(errors)})") from None
        self.current = (self.current + 1) % n
        raise EtcdUnavailable(f"etcd {path}: no endpoint answered ({'; '.join(errors)})")

    # -- kv
    async def range(self, key: str | bytes, *, prefix: bool = False, limit: int = 0) -> list[KeyValue]:
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key.encode() if isinstance(key, str) else key))
        if limit:
            body["limit"] = str(limit)
        data = await self.call("/v3/kv/range", body)
        return [KeyValue.from_json(kv) for kv in data.get("kvs", [])]

    async def get(self, key: str | bytes) -> KeyValue | None:
        kvs = await self.range(key)
        return kvs[0] if kvs else None

    async def put(self, key: str | bytes, value: str | bytes, *, lease: int = 0) -> int:
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        data = await self.call("/v3/kv/put", body, idempotent=True)     # a put twice is the same put
        return int(data.get("header", {}).get("revision", 0))

    async def delete(self, key: str | bytes, *, prefix: bool = False) -> int:
        body = {"key": b64(key)}
        if prefix:
            body["range_end"] = b64(prefix_end(key.encode() if isinstance(key, str) else key))
        data = await self.call("/v3/kv/deleterange", body)
        return int(data.get("deleted", 0))

    async def txn(self, compare: list, success: list, failure: list = ()) -> TxnResult:
        data = await self.call("/v3/kv/txn", {"compare": list(compare), "success": list(success),
                                              "failure": list(failure)}, idempotent=False)
        responses = []
        for r in data.get("responses", []):
            if "response_range" in r:
                responses.append([KeyValue.from_json(kv) for kv in r["response_range"].get("kvs", [])])
            else:
                responses.append(r)
        return TxnResult(bool(data.get("succeeded", False)), responses,
                         int(data.get("header", {}).get("revision", 0)))

    # -- leases
    async def lease_grant(self, ttl: int, lease_id: int = 0) -> tuple[int, int]:
        body = {"TTL": str(ttl)}
        if lease_id:
            body["ID"] = str(lease_id)
        data = await self.call("/v3/lease/grant", body, idempotent=False)
        return int(data["ID"]), int(data.get("TTL", ttl))

    async def lease_keepalive(self, lease_id: int, timeout: float | None = None) -> int:
        """Renew a lease: its TTL in seconds, or 0 if it no longer exists."""
        data = await self.call("/v3/lease/keepalive", {"ID": str(lease_id)}, timeout=timeout)
        return int(data.get("result", {}).get("TTL", 0))

    async def lease_revoke(self, lease_id: int):
        try:
            await self.call("/v3/lease/revoke", {"ID": str(lease_id)})
        except EtcdError as e:
            if e.code != NOT_FOUND and "not found" not in str(e):
                raise

    async def lease_ttl(self, lease_id: int) -> int:
        """Seconds left on a lease, or -1 if it does not exist."""
        data = await self.call("/v3/lease/timetolive", {"ID": str(lease_id)})
        return int(data.get("TTL", -1))

    # -- election (v3election): the lowest create revision under `name` leads
    async def campaign(self, name: str | bytes, lease: int, value: str | bytes) -> LeaderKey:
        """Blocks until this lease's candidacy leads. Cancel the task to give up waiting."""
        while True:
            try:
                data = await self.call(CAMPAIGN,
                                       {"name": b64(name), "lease": str(lease), "value": b64(value)},
                                       timeout=3600 * 24 * 365)
            except EtcdUnavailable:
                await asyncio.sleep(0.2)
                continue
            ld = data["leader"]
            return LeaderKey(unb64(ld.get("name")), unb64(ld.get("key")), int(ld.get("rev", 0)),
                             int(ld.get("lease", 0)))

    async def leader(self, name: str | bytes) -> KeyValue | None:
        try:
            data = await self.call("/v3/election/leader", {"name": b64(name)})
        except EtcdError as e:
            if "no leader" in str(e):
                return None
            raise
        kv = data.get("kv")
        return KeyValue.from_json(kv) if kv else None

    async def proclaim(self, leader: LeaderKey, value: str | bytes):
        await self.call("/v3/election/proclaim", {"leader": leader.as_json(), "value": b64(value)})

    async def resign(self, leader: LeaderKey):
        await self.call("/v3/election/resign", {"leader": leader.as_json()})

    # -- streams
    async def _stream(self, path: str, body: dict):
        """JSON objects of a streaming gateway call, as they arrive (one endpoint; the caller
        restarts the stream on error, which tries the next)."""
        ep = self.endpoint
        try:
            async with self._sess().post(ep + path, json=body,
                                         timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)) as resp:
                if resp.status != 200:
                    raise EtcdError(f"etcd {path}: HTTP {resp.status}", 0, resp.status)
                dec = json.JSONDecoder()
                buf = ""
                async for chunk in resp.content.iter_any():
                    buf += chunk.decode()
                    while True:
                        buf = buf.lstrip()
                        if not buf:
                            break
                        try:
                            obj, end = dec.raw_decode(buf)
                        except ValueError:
                            break
                        buf = buf[end:]
                        if "error" in obj:
                            err = obj["error"]
                            raise EtcdError(f"etcd {path}: {err.get('message', err)}",
                                            int(err.get("grpc_code", err.get("code", 0)) or 0))
                        yield obj.get("result", obj)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            self.current = (self.current + 1) % len(self.endpoints)
            raise EtcdUnavailable(f"etcd {path} stream from {ep}: {type(e).__name__} {e}") from None
        self.current = (self.current + 1) % len(self.endpoints)
        raise EtcdUnavailable(f"etcd {path} stream from {ep} ended")

    async def watch(self, key: str | bytes, *, prefix: bool = False, start_revision: int = 0):
        """Events on a key (or prefix) from `start_revision` (0: from now), as WatchEvent lists
        tagged with the revision of the response. Raises EtcdUnavailable when the stream breaks;
        watch again from the last revision seen + 1."""
        req = {"key": b64(key)}
        if prefix:
            req["range_end"] = b64(prefix_end(key.encode() if isinstance(key, str) else key))
        if start_revision:
            req["start_revision"] = str(start_revision)
        async for res in self._stream("/v3/watch", {"create_request": req}):
            if res.get("canceled"):
                raise EtcdError(f"watch canceled: {res.get('cancel_reason', '')}",
                                0 if not res.get("compact_revision") else FAILED_PRECONDITION)
            events = [WatchEvent(ev.get("type", "PUT"), KeyValue.from_json(ev.get("kv", {})))
                      for ev in res.get("events", [])]
            rev = int(res.get("header", {}).get("revision", 0))
            if events or res.get("created"):
                yield rev, events

    async def observe(self, name: str | bytes):
        """The election's leader, each time it changes (v3election Observe)."""
        async for res in self._stream("/v3/election/observe", {"name": b64(name)}):
            kv = res.get("kv")
            if kv:
                yield KeyValue.from_json(kv)


class _Retryable(Exception):
    pass
