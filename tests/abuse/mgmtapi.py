"""Management API helpers for the abuse tests (not a test module of its own)."""
from __future__ import annotations

import base64
import json
import re
import urllib.request

from support.harness import wait_for

MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)")


def api(srv, method, path, body=None):
    m = wait_for(lambda: MGMT_RE.search("".join(srv.lines)), message="management listener")
    req = urllib.request.Request(f"http://127.0.0.1:{m.group(2)}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode(),
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        data = r.read()
        return json.loads(data) if data else None


def put_vhost_limit(srv, name, value, vhost="%2F"):
    api(srv, "PUT", f"/api/vhost-limits/{vhost}/{name}", {"value": value})
