"""The event-loop layer: listeners, one asyncio.Protocol per connection, timers, group commit, signals.

Nothing else in Usagi touches sockets or the loop. The engine is synchronous; this module feeds it
bytes, flushes its output once per loop turn, runs store commits in a worker thread and tells the
engine when they are durable.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import time

from .. import __version__
from ..amqp import errors as E
from ..core import limits
from ..core import upkeep
from ..core.broker import Broker
from ..core.connection import OPEN, Connection

log = logging.getLogger("usagi.server")
TLS_HANDSHAKE_TIMEOUT = 5.0     # RabbitMQ's ssl_handshake_timeout


class AMQPProtocol(asyncio.Protocol):
    __slots__ = ("server", "conn", "transport")

    def __init__(self, server: "Server"):
        self.server = server
        self.conn = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        cfg = self.server.broker.config
        transport.set_write_buffer_limits(high=cfg.write_high_water, low=cfg.write_high_water // 4)
        peer = _addr(transport.get_extra_info("peername"))
        local = _addr(transport.get_extra_info("sockname"))
        conn = self.conn = Connection(self.server.broker, transport, peer, local,
                                      tls=transport.get_extra_info("ssl_object"))
        conn.on_closing = self._closing
        conn.connection_made()
        self.server.accepted(conn)

    def data_received(self, data):
        self.conn.data_received(data)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        conn = self.conn
        if conn is not None:
            conn.connection_lost()
            self.server.gone(conn)

    def pause_writing(self):
        self.conn.pause_writing()

    def resume_writing(self):
        self.conn.resume_writing()

    def _closing(self):
        # we sent connection.close: give the peer a moment for close-ok, then drop the socket
        loop = self.server.loop
        conn = self.conn
        loop.call_later(self.server.close_timeout, _drop, conn)


def _drop(conn):
    if not conn.closed:
        conn.finish_close()


def _addr(a):
    if isinstance(a, tuple) and len(a) >= 2:
        return (a[0], a[1])
    return (str(a or "?"), 0)


class Server:
    def __init__(self, broker: Broker, host=None, port: int = 5672, tls_context=None, tls_port=None):
        self.broker = broker
        self.host = host
        self.port = port
        self.tls_context = tls_context
        self.tls_port = tls_port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.servers: list = []
        self.listeners: list = []        # (proto, host, port)
        self.conns: set = set()
        self.close_timeout = 3.0
        self.commit_running = False
        self.commit_interval = 0.2       # background commit of persistent messages not waiting on confirms
        self._stopping = None
        self._tick_handle = None
        self._commit_task = None
        self._last_resource_check = 0.0
        self._last_sweep = 0.0
        self.app_stopped = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self):
        self.loop = asyncio.get_running_loop()
        b = self.broker
        b.on_flush_needed = self._schedule_flush
        b.on_commit_needed = self._schedule_commit
        b.on_defer = self.loop.call_soon
        factory = lambda: AMQPProtocol(self)  # noqa: E731
        srv = await self.loop.create_server(factory, self.host, self.port, reuse_address=True, backlog=1024)
        self.servers.append(srv)
        for sock in srv.sockets:
            h, p = sock.getsockname()[:2]
            self.listeners.append(("amqp", h, p))
        if self.tls_context is not None and self.tls_port is not None:
            tsrv = await self.loop.create_server(factory, self.host, self.tls_port, ssl=self.tls_context,
                                                 reuse_address=True, backlog=1024,
                                                 ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
            self.servers.append(tsrv)
            for sock in tsrv.sockets:
                h, p = sock.getsockname()[:2]
                self.listeners.append(("amqps", h, p))
        limits.attach(b, self.loop.call_later)
        self._tick_handle = self.loop.call_later(1.0, self._tick)
        self._fast_handle = self.loop.call_later(0.025, self._fast_tick)
        return self

    def _fast_tick(self):
        """Every 25 ms: message TTLs, delayed messages, deliveries. Each step is isolated (a
        failure is logged, rate-limited, and the other steps still run) and the timer is always
        set again."""
        b = self.broker
        try:
            if b.ttl_queues:
                try:
                    b.expire(int(time.time() * 1000))
                except Exception:
                    upkeep.failed("message TTL expiry", log)
            if len(b.delayed):
                try:
                    b._release_delayed(int(time.time() * 1000))
                except Exception:
                    upkeep.failed("delayed message release", log)
            if b.dirty:
                try:
                    b.run_dirty()
                except Exception:
                    upkeep.failed("deliveries", log)
        finally:
            self._fast_handle = self.loop.call_later(0.025, self._fast_tick)

    async def stop_app(self):
        """rabbitmqctl stop_app: stop the AMQP side (listeners closed, connections closed with 320);
        the process, the management API and all state stay."""
        if self.app_stopped:
            return
        self.app_stopped = True
        for srv in self.servers:
            srv.close()
        self.servers = []
        self.broker.shutdown_connections("broker forced connection closure with reason 'shutdown'")
        self.broker.flush_output()
        log.info("AMQP listeners stopped (stop_app)")

    async def start_app(self):
        """rabbitmqctl start_app: listen again on the same ports."""
        if not self.app_stopped:
            return
        factory = lambda: AMQPProtocol(self)  # noqa: E731
        ports = sorted({(proto, p) for proto, _h, p in self.listeners})
        for proto, port in ports:
            kw = {"ssl": self.tls_context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT} \
                if proto == "amqps" else {}
            srv = await self.loop.create_server(factory, self.host, port, reuse_address=True,
                                                backlog=1024, **kw)
            self.servers.append(srv)
        self.app_stopped = False
        log.info("AMQP listeners started again (start_app)")

    @property
    def amqp_port(self) -> int:
        for proto, _h, p in self.listeners:
            if proto == "amqp":
                return p
        return 0

    def _schedule_flush(self):
        self.loop.call_soon(self.broker.flush_output)

    def accepted(self, conn):
        self.conns.add(conn)

    def gone(self, conn):
        self.conns.discard(conn)

    # ------------------------------------------------------------------ timers
    def _tick(self):
        """Several times a second: handshake and heartbeat timeouts, background commits, x-expires,
        consumer timeouts, resource alarms, deliveries. No input can stop it: each step (and each
        connection's check) is isolated, a failure is logged (rate-limited) and the others still
        run, and the timer is set again whatever happens."""
        try:
            now = time.monotonic()
            b = self.broker
            hs_timeout = b.config.handshake_timeout
            for conn in list(self.conns):
                try:
                    if conn.closed:
                        self.conns.discard(conn)
                        continue
                    # as RabbitMQ's handshake_timeout: counted from the accept, however slowly bytes trickle in
                    if conn.state < OPEN and conn.connected_at and time.time() - conn.connected_at > hs_timeout:
                        log.warning("connection %s: handshake timeout", conn.name)
                        conn.transport.abort()
                        conn.connection_lost()
                        continue
                    if not conn.heartbeat_tick(now):
                        conn.transport.abort()
                        conn.connection_lost()
                except Exception:
                    upkeep.failed("handshake and heartbeat checks", log, f"connection {conn.name}")
            try:
                if b.store.durable and not self.commit_running and b.store.pending():
                    self._schedule_commit()
            except Exception:
                upkeep.failed("background commit scheduling", log)
            try:
                b.tick(time.time())
            except Exception:
                upkeep.failed("broker tick (x-expires)", log)
            if now - self._last_sweep >= 0.5:
                self._last_sweep = now
                try:
                    limits.sweep(b, now)            # consumer acknowledgement timeouts
                except Exception:
                    upkeep.failed("consumer timeout sweep", log)
            if now - self._last_resource_check >= 1.0:
                self._last_resource_check = now
                try:
                    limits.forget_stale(b, now)
                except Exception:
                    upkeep.failed("failed-login bookkeeping", log)
                try:
                    b.check_resources()
                except Exception:
                    upkeep.failed("resource checks", log)
            try:
                b.run_dirty()
            except Exception:
                upkeep.failed("deliveries", log)
        finally:
            self._tick_handle = self.loop.call_later(min(1.0, self.commit_interval), self._tick)

    # ------------------------------------------------------------------ group commit
    def _schedule_commit(self):
        if not self.commit_running:
            self.commit_running = True
            self._commit_task = self.loop.create_task(self._commit_loop())

    async def _commit_loop(self):
        b = self.broker
        try:
            while b.commit_waiters or b.store.pending():
                epoch, waiters = b.begin_commit()
                error = None
                try:
                    await self.loop.run_in_executor(None, b.store.commit)
                except Exception as e:  # storage errors reach the publishers as nacks
                    log.error("store commit failed: %s", e)
                    error = e
                b.commit_done(epoch, waiters, error)
                b.flush_output()
        finally:
            self.commit_running = False

    # ------------------------------------------------------------------ stop
    async def stop(self, reason: str = "shutdown"):
        for srv in self.servers:
            srv.close()
        b = self.broker
        b.shutdown_connections(f"broker forced connection closure with reason '{reason}'")
        b.flush_output()
        deadline = time.monotonic() + 2.0
        while any(not c.closed for c in self.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.conns):
            if not c.closed:
                c.finish_close()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if getattr(self, "_fast_handle", None) is not None:
            self._fast_handle.cancel()
        while self.commit_running:
            await asyncio.sleep(0.01)
        if b.store.durable and b.store.pending():
            await self.loop.run_in_executor(None, b.store.commit)
        b.store.close()
        b.delayed.close()
        for srv in self.servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass


async def serve(broker: Broker, host, port, on_started=None, extra_services=(), tls_context=None,
                tls_port=None):
    """Run until SIGINT/SIGTERM. Returns the exit code."""
    # Messages and frames make no reference cycles: collect cycles rarely, so that the collector
    # does not pause deliveries (it shows in tail latency), and leave start-up objects out of it.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    server = await Server(broker, host, port, tls_context=tls_context, tls_port=tls_port).start()
    started = []
    for svc in extra_services:
        started.append(await svc(broker, server))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if on_started is not None:
        on_started(server, started)
    await stop.wait()
    log.info("stopping: closing %d connections", len(server.conns))
    for s in started:
        try:
            await s.stop()
        except Exception:  # pragma: no cover
            pass
    await server.stop()
    log.info("Usagi %s stopped", __version__)
    return 0


__all__ = ["Server", "serve", "E"]
