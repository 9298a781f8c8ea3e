"""A follower forwards client connections to the leader, byte for byte.

Clients may connect to any node. On a follower, each accepted AMQP (or HTTP) connection is
connected to the same service on the leader; the follower first sends a PROXY protocol v1 header
(`PROXY TCP4 <client ip> <node ip> <client port> <node port>\\r\\n`) so that the leader sees the
client's real address (`guest` stays loopback-only, connection listings show the client), then
copies bytes both ways. Backpressure: when one side's write buffer passes its high-water mark,
reading from the other side pauses until it drains, so a slow reader costs the follower a bounded
buffer, not memory without end. When the leader changes, the cluster service closes every
forwarded connection; clients that reconnect land on the new leader.

The leader accepts a PROXY header only from the cluster's nodes (`parse_proxy_header` is given
the set of trusted addresses); from anyone else the connection is refused, as a header from an
untrusted peer could claim any address.
"""
from __future__ import annotations

import asyncio
import logging
import time

from ..server.proxy_protocol import proxy_header

log = logging.getLogger("usagi.cluster.proxy")

HIGH_WATER = 1 * 1024 * 1024


class _Pipe(asyncio.Protocol):
    """One side of a forwarded connection; `peer` is the other side's _Pipe."""

    def __init__(self, on_lost=None):
        self.transport = None
        self.peer: "_Pipe | None" = None
        self.buffer = []            # bytes received before the other side was connected
        self.on_lost = on_lost
        self.closed = False
        self.last_rx = 0.0          # when this side last received data (a stopping follower's drain)

    def connection_made(self, transport):
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=HIGH_WATER // 4)

    def data_received(self, data):
        self.last_rx = time.monotonic()
        p = self.peer
        if p is None or p.transport is None:
            self.buffer.append(data)
            if sum(map(len, self.buffer)) > HIGH_WATER:
                self.transport.pause_reading()
            return
        p.transport.write(data)

    def pause_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self):
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def eof_received(self):
        if self.peer is not None and self.peer.transport is not None and self.peer.transport.can_write_eof():
            self.peer.transport.write_eof()
        return True

    def connection_lost(self, exc):
        self.closed = True
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        if self.on_lost is not None:
            self.on_lost(self)

    def close(self):
        if self.transport is not None:
            self.transport.close()


class Forwarder:
    """Accepts connections on a follower's listening socket and forwards them to `target()`,
    a callable giving the leader's (host, port) for this service, or None while there is none."""

    def __init__(self, target, send_proxy_header: bool = True, wait_for_leader: float = 10.0,
                 local_host: str | None = None):
        self.target = target
        self.send_proxy_header = send_proxy_header
        self.local_host = local_host    # connect from this node's own address: the leader trusts it
        self.wait_for_leader = wait_for_leader
        self.pipes: set = set()
        self.forwarded = 0

    def factory(self):
        return _Client(self)

    def close_all(self):
        for p in list(self.pipes):
            p.close()
        self.pipes.clear()

    async def drain(self, quiet: float = 0.3, limit: float = 3.0):
        """Before a follower stops: forward nothing more from the clients, but let what the leader
        still sends them (the confirms of publishes it has read) through, until the leader has been
        silent for `quiet` seconds on every connection, or `limit` seconds have passed. A client
        then sees its connection close with as few publishes left unconfirmed as can be."""
        ups = []
        for p in list(self.pipes):
            if isinstance(p, _Client):
                if p.transport is not None and not p.transport.is_closing():
                    p.transport.pause_reading()
            elif not p.closed:
                ups.append(p)
        if not ups:
            return
        start = time.monotonic()
        for p in ups:
            p.last_rx = max(p.last_rx, start)
        while time.monotonic() - start < limit:
            now = time.monotonic()
            if all(p.closed or now - p.last_rx >= quiet for p in ups):
                return
            await asyncio.sleep(0.05)

    async def _connect(self, client: "_Client"):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_for_leader
        while True:
            addr = self.target()
            if addr is not None:
                break
            if loop.time() > deadline or client.closed:
                client.close()
                return
            await asyncio.sleep(0.1)
        try:
            local = (self.local_host, 0) if self.local_host else None
            try:
                _t, up = await loop.create_connection(lambda: _Pipe(self._lost), addr[0], addr[1],
                                                      local_addr=local)
            except OSError:
                if local is None:
                    raise
                # the advertised address is not one this host can bind: connect from any
                _t, up = await loop.create_connection(lambda: _Pipe(self._lost), addr[0], addr[1])
        except OSError as e:
            log.info("proxy: cannot reach the leader at %s:%s: %s", addr[0], addr[1], e)
            client.close()
            return
        if client.closed:
            up.close()
            return
        self.pipes.add(up)
        up.peer, client.peer = client, up
        if self.send_proxy_header:
            up.transport.write(proxy_header(client.transport.get_extra_info("peername"),
                                            client.transport.get_extra_info("sockname")))
        for chunk in client.buffer:
            up.transport.write(chunk)
        client.buffer = []
        client.transport.resume_reading()
        self.forwarded += 1

    def _lost(self, pipe):
        self.pipes.discard(pipe)


class _Client(_Pipe):
    def __init__(self, fwd: Forwarder):
        super().__init__(fwd._lost)
        self.fwd = fwd

    def connection_made(self, transport):
        super().connection_made(transport)
        self.fwd.pipes.add(self)
        asyncio.ensure_future(self.fwd._connect(self))
