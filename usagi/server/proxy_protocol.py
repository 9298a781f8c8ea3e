"""The PROXY protocol (version 1) header: how a cluster node forwarding a client tells the leader
who the client is (`PROXY TCP4 <client ip> <node ip> <client port> <node port>\\r\\n`).

The leader accepts it only from the cluster's own nodes (see server.app.AMQPProtocol); a header
from anyone else could claim any address.
"""
from __future__ import annotations

import ipaddress

MAX_HEADER = 107            # the PROXY v1 header's maximum length, CRLF included


def proxy_header(client: tuple, local: tuple) -> bytes:
    ip = client[0]
    fam = "TCP6" if ":" in ip else "TCP4"
    lip = local[0]
    if (":" in lip) != (":" in ip):        # mixed families: the header cannot say both
        return b"PROXY UNKNOWN\r\n"
    return f"PROXY {fam} {ip} {lip} {client[1]} {local[1]}\r\n".encode()


class ProxyHeaderError(Exception):
    pass


def parse_proxy_header(data: bytes):
    """(consumed bytes, (client ip, client port)) if `data` starts with a complete PROXY v1
    header; (0, None) if more bytes are needed; ProxyHeaderError if it is malformed."""
    end = data.find(b"\r\n", 0, MAX_HEADER)
    if end < 0:
        if len(data) >= MAX_HEADER:
            raise ProxyHeaderError("PROXY header too long")
        return 0, None
    parts = data[:end].decode("ascii", "replace").split(" ")
    if parts[0] != "PROXY":
        raise ProxyHeaderError("not a PROXY header")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return end + 2, None
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"malformed PROXY header {data[:end]!r}")
    try:
        ipaddress.ip_address(parts[2])
        port = int(parts[4])
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        raise ProxyHeaderError(f"malformed PROXY header {data[:end]!r}") from None
    return end + 2, (parts[2], port)
