"""systemd's readiness protocol (sd_notify), without a dependency: under a unit of Type=notify,
systemd passes a datagram socket in NOTIFY_SOCKET and waits for READY=1 before it counts the
service as started (and starts what is ordered after it); STOPPING=1 says a stop has begun.

Outside systemd (no NOTIFY_SOCKET) this does nothing. A failure to send is ignored: the broker
runs the same either way.
"""
from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send `KEY=value` lines to systemd; True if sent."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path or not fields:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]          # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.connect(path)
            s.sendall("\n".join(fields).encode("utf-8"))
        return True
    except OSError:
        return False
