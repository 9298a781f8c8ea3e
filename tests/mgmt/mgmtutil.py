"""Helpers for the management API tests (import as `from mgmtutil import ...`)."""
from __future__ import annotations

import base64
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")
METRICS_RE = re.compile(r"Metrics listener on (\S+):(\d+)")
FAST_STATS = {"USAGI_COLLECT_STATISTICS_INTERVAL": "200"}


def q(name: str) -> str:
    """A name as one URL path segment (the default vhost is %2F)."""
    return urllib.parse.quote(name, safe="")


class Resp:
    def __init__(self, status: int, headers, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Resp {self.status} {self.body[:300]!r}>"


class Api:
    """A tiny HTTP client for the management API, with basic auth."""

    def __init__(self, base: str, user: str | None = "guest", password: str = "guest"):
        self.base = base
        self.user = user
        self.password = password

    def as_user(self, user, password) -> "Api":
        return Api(self.base, user, password)

    def request(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None) -> Resp:
        data = json.dumps(body).encode() if body is not None else raw
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if self.user is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            req.add_header("Authorization", "Basic " + token)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return Resp(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Resp(e.code, e.headers, e.read())

    def get(self, path, **kw) -> Resp:
        return self.request("GET", path, **kw)

    def put(self, path, body=None, **kw) -> Resp:
        return self.request("PUT", path, body if body is not None else {}, **kw)

    def post(self, path, body=None, **kw) -> Resp:
        return self.request("POST", path, body if body is not None else {}, **kw)

    def delete(self, path, **kw) -> Resp:
        return self.request("DELETE", path, **kw)

    def ok(self, method: str, path: str, body=None, expect=(200, 201, 204)):
        r = self.request(method, path, body)
        assert r.status in expect, f"{method} {path}: {r}"
        return r.json() if r.body else None


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(interval)
