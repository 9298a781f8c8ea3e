"""The event-loop layer: listeners, one asyncio.Protocol per connection, timers, group commit, signals.

Nothing else in Usagi touches sockets or the loop. The engine is synchronous; this module feeds it
bytes, flushes its output once per loop turn, runs store commits in a worker thread and tells the
engine when they are durable. A failing store (a full disk) is retried with a growing back-off,
logged once per period, and meanwhile whoever waits for a commit gets the error at once.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import socket
import time

from .. import __version__
from ..amqp import errors as E
from ..core import limits
from ..core import upkeep
from ..core.broker import Broker, CommitFailed
from ..core.connection import OPEN, Connection

log = logging.getLogger("usagi.server")
TLS_HANDSHAKE_TIMEOUT = 5.0     # RabbitMQ's ssl_handshake_timeout
STOP_COMMIT_WAIT = 10.0         # how long a stop waits for a store commit under way


class CommitBackoff:
    """The retries of a failing store: a back-off growing from FIRST to CAP seconds, and one log line
    when it starts failing, one per LOG_EVERY seconds while it goes on, one when it works again."""

    FIRST = 0.1
    CAP = 3.0
    LOG_EVERY = 10.0

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.error = None           # the last commit's error while failing, else None
        self.delay = 0.0
        self.since = 0.0
        self.failures = 0           # failed attempts since it started failing
        self.logged_at = 0.0
        self.logged_failures = 0

    def failed(self, error) -> float:
        """A commit failed: returns how long to wait before the next attempt."""
        now = self.clock()
        self.failures += 1
        if self.error is None:
            self.since = self.logged_at = now
            self.logged_failures = self.failures = 1
            self.delay = self.FIRST
            log.error("store commit failed: %s; retrying with a back-off of up to %.0fs: until a commit "
                      "succeeds, publishers get nacks and replies that promise durability an error",
                      error, self.CAP)
        else:
            self.delay = min(self.CAP, self.delay * 2)
            if now - self.logged_at >= self.LOG_EVERY:
                log.error("store commit still failing after %.0fs: %d attempts failed since the last "
                          "report, %d in all; last error: %s", now - self.since,
                          self.failures - self.logged_failures, self.failures, error)
                self.logged_at = now
                self.logged_failures = self.failures
        self.error = error
        return self.delay

    def succeeded(self):
        if self.error is not None:
            log.warning("store commit succeeded again after %d failed attempts over %.1fs",
                        self.failures, self.clock() - self.since)
            self.error = None
            self.failures = 0


class _Barrier:
    """A commit waiter (see Broker.wait_for_commit) that completes a future."""

    __slots__ = ("fut",)

    def __init__(self, fut):
        self.fut = fut

    def on_commit(self, epoch, error):
        if not self.fut.done():
            if error is None:
                self.fut.set_result(None)
            else:
                self.fut.set_exception(CommitFailed(f"store commit failed: {error}"))


class AMQPProtocol(asyncio.Protocol):
    __slots__ = ("server", "conn", "transport", "proxied")

    def __init__(self, server: "Server"):
        self.server = server
        self.conn = None
        self.transport = None
        self.proxied = None          # bytes received before a PROXY header completed (cluster nodes)

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
        trusted = self.server.trusted_proxies
        if trusted and peer[0] in trusted:
            # another node of the cluster forwarding a client: the PROXY header says who it is
            self.proxied = b""
            self.server.loop.call_later(self.server.broker.config.handshake_timeout, self._proxy_timeout)
            return
        self._open(peer)

    def _open(self, peer):
        transport = self.transport
        local = _addr(transport.get_extra_info("sockname"))
        conn = self.conn = Connection(self.server.broker, transport, peer, local,
                                      tls=transport.get_extra_info("ssl_object"))
        conn.on_closing = self._closing
        conn.connection_made()
        self.server.accepted(conn)

    def _proxy_data(self, data):
        from .proxy_protocol import ProxyHeaderError, parse_proxy_header
        buf = self.proxied + data
        if not b"PROXY "[:len(buf)] == buf[:6]:
            # a client of the node's own address, not a forwarded one: an ordinary connection
            self.proxied = None
            self._open(_addr(self.transport.get_extra_info("peername")))
            self.conn.data_received(buf)
            return
        try:
            used, client = parse_proxy_header(buf)
        except ProxyHeaderError as e:
            log.warning("connection from cluster node %s: %s; closing", _addr(self.transport.get_extra_info("peername"))[0], e)
            self.transport.close()
            return
        if not used:
            self.proxied = buf
            return
        self.proxied = None
        self._open(client or _addr(self.transport.get_extra_info("peername")))
        if len(buf) > used:
            self.conn.data_received(buf[used:])

    def _proxy_timeout(self):
        if self.conn is None and not self.transport.is_closing():
            self.transport.abort()

    def data_received(self, data):
        conn = self.conn
        if conn is None:
            self._proxy_data(data)
            return
        conn.data_received(data)

    def eof_received(self):
        return False

    def connection_lost(self, exc):
        conn = self.conn
        if conn is not None:
            conn.connection_lost()
            self.server.gone(conn)

    def pause_writing(self):
        if self.conn is not None:
            self.conn.pause_writing()

    def resume_writing(self):
        if self.conn is not None:
            self.conn.resume_writing()

    def _closing(self):
        # we sent connection.close: give the peer a moment for close-ok, then drop the socket
        loop = self.server.loop
        conn = self.conn
        loop.call_later(self.server.close_timeout, _drop, conn)


def _drop(conn):
    if not conn.closed:
        try:
            conn.finish_close()
        except Exception:
            upkeep.failed("closing a connection after its close timeout", log, conn.name)


def _addr(a):
    if isinstance(a, tuple) and len(a) >= 2:
        return (a[0], a[1])
    return (str(a or "?"), 0)


class Server:
    def __init__(self, broker: Broker, host=None, port: int = 5672, tls_context=None, tls_port=None,
                 listeners=None):
        self.broker = broker
        self.host = host
        self.port = port
        self.tls_context = tls_context
        self.tls_port = tls_port
        # what to listen on: (proto, host or None for all interfaces, port), proto "amqp" or "amqps"
        # (rabbitmq.conf's listeners.tcp.* and listeners.ssl.*); by default AMQP on host:port, and
        # AMQPS on host:tls_port when there is a TLS context
        if listeners is None:
            listeners = [("amqp", host, port)]
            if tls_context is not None and tls_port is not None:
                listeners.append(("amqps", host, tls_port))
        self.specs = list(listeners)
        self.bound: list = []            # (proto, host asked for, port bound): what start_app listens on again
        self.loop: asyncio.AbstractEventLoop | None = None
        self.servers: list = []
        self.listeners: list = []        # (proto, host, port)
        self.conns: set = set()
        self.close_timeout = 3.0
        self.stop_close_wait = 2.0       # how long a stop waits for clients to answer connection.close
        self.commit_running = False
        self.commit_interval = 0.2       # background commit of persistent messages not waiting on confirms
        self.backoff = CommitBackoff()
        self._backoff_wait = None        # the future a failing commit loop sleeps on
        self._stopping = None
        self._tick_handle = None
        self._commit_task = None
        self._last_resource_check = 0.0
        self._last_sweep = 0.0
        self.app_stopped = False
        # cluster mode (set by usagi.cluster.node): how a commit is made durable (replicated), the
        # node addresses whose connections start with a PROXY header, and signs of progress for the
        # lease watchdog
        self.committer = None            # async () -> None, or None for a local store commit
        self.trusted_proxies: set = set()
        self.last_tick = time.monotonic()
        self.commit_started = None       # monotonic time the running commit began
        # a stop asked for through the management API (usagictl stop): None sends SIGTERM to the
        # process; a broker embedded in another program (usagi.testing) stops only itself
        self.on_stop_requested = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self):
        self.loop = asyncio.get_running_loop()
        b = self.broker
        b.on_flush_needed = self._schedule_flush
        b.on_commit_needed = self._schedule_commit
        b.on_commit_barrier = self.commit_barrier
        b.on_defer = self.loop.call_soon
        for proto, host, port in self.specs:
            srv = await self._listen(proto, host, port)
            for sock in srv.sockets:
                h, p = sock.getsockname()[:2]
                self.listeners.append((proto, h, p))
                if (proto, host, p) not in self.bound:
                    self.bound.append((proto, host, p))
        limits.attach(b, self.loop.call_later)
        self._tick_handle = self.loop.call_later(1.0, self._tick)
        self._fast_handle = self.loop.call_later(0.025, self._fast_tick)
        return self

    def _flush_first(self):
        """Output waiting for this loop turn's flush goes out before a timer's work. The event loop
        runs due timers before the callbacks queued by the last turn's reads (the flush among
        them): without this, a delivery made just before a tick waited for the tick (a few percent
        of deliveries at 10,000 msg/s, and most of the slowest)."""
        if self.broker.flush_pending:
            try:
                self.broker.flush_output()
            except Exception:
                upkeep.failed("output flush", log)

    def _fast_tick(self):
        """Every 25 ms: message TTLs, delayed messages, deliveries. Each step is isolated (a
        failure is logged, rate-limited, and the other steps still run) and the timer is always
        set again."""
        b = self.broker
        try:
            self._flush_first()
            if b.ttl_queues or b.ttl_heap:
                try:
                    b.expire(int(time.time() * 1000))
                except Exception:
                    upkeep.failed("message TTL expiry", log)
            try:
                b.memory_tick()             # a bounded step of the memory accounting (core/alarms.py)
            except Exception:
                upkeep.failed("memory accounting", log)
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
            if b.flow_waits:
                try:
                    b.flow_tick()
                except Exception:
                    upkeep.failed("publisher flow", log)
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
        for proto, host, port in self.bound:
            await self._listen(proto, host, port)
        self.app_stopped = False
        log.info("AMQP listeners started again (start_app)")

    async def _listen(self, proto: str, host, port: int):
        factory = lambda: AMQPProtocol(self)  # noqa: E731
        kw = {"ssl": self.tls_context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT} if proto == "amqps" else {}
        srv = await self.loop.create_server(factory, host, port, reuse_address=True, backlog=1024, **kw)
        self.servers.append(srv)
        return srv

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
            self._flush_first()
            now = self.last_tick = time.monotonic()
            b = self.broker
            hs_timeout = b.config.handshake_timeout
            for conn in list(self.conns):
                try:
                    if conn.closed:
                        self.conns.discard(conn)
                        continue
                    # as RabbitMQ's handshake_timeout: counted from the accept, however slowly bytes trickle in
                    if conn.state < OPEN and conn.connected_at and time.time() - conn.connected_at > hs_timeout:
                        conn.note_end("handshake timeout", logging.WARNING)
                        conn.transport.abort()
                        conn.connection_lost()
                        continue
                    if not conn.heartbeat_tick(now):
                        conn.transport.abort()
                        conn.connection_lost()
                except Exception:
                    upkeep.failed("handshake and heartbeat checks", log, f"connection {conn.name}")
            try:
                if b.store.durable and not self.commit_running and b.store_pending():
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
            if b.flow_off:
                try:
                    b.flow_forget()
                except Exception:
                    upkeep.failed("publisher flow marks", log)
        finally:
            self._tick_handle = self.loop.call_later(min(1.0, self.commit_interval), self._tick)

    # ------------------------------------------------------------------ group commit
    def _schedule_commit(self):
        if self._stopping:
            return
        if not self.commit_running:
            self.commit_running = True
            self._commit_task = self.loop.create_task(self._commit_loop())
        elif self._backoff_wait is not None:
            # the store is failing and the loop waits before its next attempt: this waiter gets
            # the last error now rather than after the back-off
            self.loop.call_soon(self._fail_waiters)

    def _fail_waiters(self):
        b = self.broker
        if self._backoff_wait is None or not b.commit_waiters or self.backoff.error is None:
            return
        epoch, waiters = b.begin_commit()
        b.commit_done(epoch, waiters, self.backoff.error)
        b.flush_output()

    def commit_barrier(self):
        """An awaitable done when everything recorded so far is durable; it raises CommitFailed if
        the commit holding it fails (the management API answers its writes after it)."""
        fut = self.loop.create_future()
        b = self.broker
        if not b.commit_needed():
            fut.set_result(None)
        else:
            b.wait_for_commit(_Barrier(fut))
        return fut

    async def _commit_loop(self):
        b = self.broker
        try:
            while not self._stopping and (b.commit_waiters or b.store_pending()):
                epoch, waiters = b.begin_commit()
                error = None
                self.commit_started = time.monotonic()
                try:
                    if self.committer is not None:
                        await self.committer()
                    else:
                        await self.loop.run_in_executor(None, b.store.commit)
                except Exception as e:  # storage errors reach the waiters: nacks, errors
                    error = e
                finally:
                    self.commit_started = None
                b.commit_done(epoch, waiters, error)
                b.flush_output()
                if error is None:
                    self.backoff.succeeded()
                    continue
                # what failed stays pending in the store and is retried first after the back-off
                delay = self.backoff.failed(error)
                if self._stopping:
                    break
                fut = self._backoff_wait = self.loop.create_future()
                handle = self.loop.call_later(delay, _wake, fut)
                self._fail_waiters()
                try:
                    await fut
                finally:
                    handle.cancel()
                    self._backoff_wait = None
        except Exception:   # pragma: no cover - a bug; the next commit request starts a new loop
            log.exception("store commit loop failed")
        finally:
            self.commit_running = False

    # ------------------------------------------------------------------ stop
    async def stop(self, reason: str = "shutdown") -> bool:
        """Close listeners and connections, write what is pending and close the store. Returns False
        when something could not be written (it is logged); the stop completes either way."""
        for srv in self.servers:
            srv.close()
        b = self.broker
        b.shutdown_connections(f"broker forced connection closure with reason '{reason}'")
        b.flush_output()
        deadline = time.monotonic() + self.stop_close_wait
        while any(not c.closed for c in self.conns) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for c in list(self.conns):
            if not c.closed:
                c.finish_close()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if getattr(self, "_fast_handle", None) is not None:
            self._fast_handle.cancel()
        self._stopping = True
        if self._backoff_wait is not None:
            _wake(self._backoff_wait)
        deadline = time.monotonic() + STOP_COMMIT_WAIT
        while self.commit_running and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        ok = True
        if self.commit_running:
            log.error("a store commit is still running after %.0fs; stopping without waiting for it: "
                      "what it holds may not be written", STOP_COMMIT_WAIT)
            ok = False
        else:
            store = b.store
            if b.staged:
                b.save_staged()         # here, on the loop's thread, before the store's last commit
            unwritten = ""
            if store.durable and store.pending():
                unwritten = store.pending_summary()
            close = store.close                                         # commits what is pending first
            if self.committer is not None:
                # cluster mode: what is pending goes through replication like any commit; what it
                # could not take is dropped rather than written here alone (the store would then
                # hold changes its followers never saw)
                try:
                    if store.pending():
                        await asyncio.wait_for(self.committer(), STOP_COMMIT_WAIT)
                    unwritten = ""
                except Exception as e:  # noqa: BLE001 - reported below
                    log.error("stopping: the last changes could not be replicated (%s): not written: %s", e,
                              unwritten or "(nothing known)")
                    ok = False
                close = functools.partial(store.close, commit=False)
            try:
                await self.loop.run_in_executor(None, close)
            except Exception as e:
                log.error("stopping with writes the store could not take (%s): not written: %s", e,
                          unwritten or "(nothing known)")
                ok = False
        try:
            b.delayed.close()
        except Exception as e:
            log.error("closing the delayed-message store failed: %s", e)
            ok = False
        for srv in self.servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except (asyncio.TimeoutError, Exception):
                pass
        return ok


def _wake(fut):
    if not fut.done():
        fut.set_result(None)


async def start_server(broker: Broker, host, port, extra_services=(), tls_context=None, tls_port=None,
                       listeners=None):
    """Listen and start the services (the management API) on the running loop: (Server, running
    services), to be stopped with stop_server. If a service cannot start (its port is taken), what
    was started is stopped again before the error is raised. `listeners`: see Server."""
    server = await Server(broker, host, port, tls_context=tls_context, tls_port=tls_port,
                          listeners=listeners).start()
    started = []
    try:
        for svc in extra_services:
            started.append(await svc(broker, server))
    except BaseException:
        await stop_server(server, started)
        raise
    return server, started


async def stop_server(server: Server, services) -> bool:
    """Stop the services, then the server (see Server.stop): False if some writes were not made."""
    for s in services:
        try:
            await s.stop()
        except Exception:  # pragma: no cover
            pass
    return await server.stop()


async def serve(broker: Broker, host, port, on_started=None, extra_services=(), tls_context=None,
                tls_port=None, listeners=None, on_stopping=None):
    """Run until SIGINT/SIGTERM. Returns the exit code. `listeners`: see Server; `on_stopping` is
    called when a stop begins."""
    # Messages and frames make no reference cycles: collect cycles rarely, so that the collector
    # does not pause deliveries (it shows in tail latency), and leave start-up objects out of it.
    # The middle generation is collected every 2 young collections (at most ~100,000 survivors, some
    # 20-40 ms) rather than every 50: after 100,000 queues are declared or imported, a pass over 50
    # young collections' survivors held the loop 350-420 ms. Full collections come as often as
    # before (every 5,000 young collections, when the long-lived objects grew by a quarter).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 2, 2_500)
    server, started = await start_server(broker, host, port, extra_services, tls_context=tls_context,
                                         tls_port=tls_port, listeners=listeners)
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
    stop_watchdog(loop)
    if on_stopping is not None:
        on_stopping()
    log.info("stopping: closing %d connections", len(server.conns))
    if not await stop_server(server, started):
        log.error("Usagi %s stopped; some writes were not made (see above)", __version__)
        return 1
    log.info("Usagi %s stopped", __version__)
    return 0


__all__ = ["Server", "serve", "start_server", "stop_server", "E"]


STOP_DEADLINE = 60.0     # a stop that has not completed by then ends the process (status 1)


def stop_watchdog(loop, deadline: float = STOP_DEADLINE):
    """Called when a stop begins: if the process is still there `deadline` seconds later, log the
    tasks that are holding it up and exit (status 1). A stop always completes."""
    import os
    import threading
    import traceback

    def dump():
        try:
            for t in asyncio.all_tasks(loop):
                stack = "".join(traceback.format_stack(t.get_stack(limit=6)[-1], limit=1)) if t.get_stack() else ""
                log.error("still running at the stop deadline: %r %s", t, stack.strip())
        except Exception:  # noqa: BLE001 - diagnostics only
            pass

    def watch():
        time.sleep(deadline)
        log.error("the stop did not complete within %.0f s; exiting now", deadline)
        try:
            loop.call_soon_threadsafe(dump)
            time.sleep(1.0)
        except RuntimeError:
            pass
        logging.shutdown()
        os._exit(1)
    threading.Thread(target=watch, name="stop-watchdog", daemon=True).start()
