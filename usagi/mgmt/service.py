"""The management service: aiohttp listeners for the HTTP API and Prometheus, and the rate sampler.

The server composes it in with `management_service(host, management_port, metrics_port)`, which
returns `svc(broker, server)`; awaiting that starts the listeners on the running loop and returns
the running service (`stop()`, `describe()`). Port 0 picks a free port; -1 disables a listener.

Request bodies are capped as RabbitMQ caps them (`management.http.max_body_size`, 20,000,000
bytes by default; `usagi-server --management-max-body-size`): the cap is checked in api.dispatch,
after the user's rights and before a byte of the body is read. A refused body is never read: the
connection is closed after the answer (no lingering read of what the client goes on sending).
"""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import time
import weakref
from pathlib import Path

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..core import upkeep
from . import api, metrics, ops
from .slices import Pacer
from .stats import Sampler

log = logging.getLogger("usagi.mgmt")

STATIC_DIR = Path(__file__).with_name("static")
DEFAULT_INTERVAL = 5.0      # RabbitMQ's collect_statistics_interval
DEFAULT_MAX_BODY_SIZE = 20_000_000      # bytes: RabbitMQ's management.http.max_body_size default
METRICS_AT_ONCE = 2           # metrics expositions made at the same time (see _exposition)
METRICS_WAIT = 60.0           # seconds one waits for its turn
METRICS_WRITE_TIMEOUT = 60.0  # seconds a client may read nothing of an exposition
_actions: set = set()       # server actions (run_soon) still running
REQUEST_TIMEOUT = 120.0     # s a connection may hold without a request under way (RabbitMQ's
                            # management.tcp.idle_timeout and request_timeout defaults)
SWEEP_INTERVAL = 10.0       # s between two looks at the connections (cost: one step per connection)
BAD_REQUEST_LOG_INTERVAL = 10.0   # s: malformed requests are logged once per interval, one line


class _MalformedRequests(logging.Filter):
    """aiohttp logs a traceback for every request it cannot parse: a client could fill the log.
    Those are summed up here in one line per BAD_REQUEST_LOG_INTERVAL (the client got its 400)."""

    def __init__(self):
        super().__init__()
        self.last = 0.0
        self.count = 0

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        self.count += 1
        now = time.monotonic()
        if now - self.last >= BAD_REQUEST_LOG_INTERVAL:
            self.last = now
            what = str(getattr(exc, "message", "") or type(exc).__name__).splitlines()[0][:120]
            log.info("management: %d malformed HTTP request(s) refused with 400 (latest: %r)", self.count, what)
            self.count = 0
        return False


_malformed = _MalformedRequests()
logging.getLogger("aiohttp.server").addFilter(_malformed)


def max_body_size_from_env() -> int:
    """USAGI_MANAGEMENT_MAX_BODY_SIZE (bytes), else RabbitMQ's default."""
    raw = os.environ.get("USAGI_MANAGEMENT_MAX_BODY_SIZE")
    if raw:
        try:
            v = int(raw)
            if v >= 0:
                return v
        except ValueError:
            pass
        log.warning("ignoring USAGI_MANAGEMENT_MAX_BODY_SIZE=%r: not a non-negative integer", raw)
    return DEFAULT_MAX_BODY_SIZE


def _seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw:
        try:
            v = float(raw)
            if v > 0:
                return v
        except ValueError:
            pass
        log.warning("ignoring %s=%r: not a positive number of seconds", name, raw)
    return default


def _interval() -> float:
    raw = os.environ.get("USAGI_COLLECT_STATISTICS_INTERVAL")     # milliseconds, like RabbitMQ's setting
    if raw:
        try:
            v = float(raw) / 1000.0
            if v > 0:
                return v
        except ValueError:
            log.warning("ignoring USAGI_COLLECT_STATISTICS_INTERVAL=%r: not a number", raw)
    return DEFAULT_INTERVAL


def _sock_addr(site) -> tuple[str, int]:
    server = getattr(site, "_server", None)
    for sock in getattr(server, "sockets", None) or ():
        h, p = sock.getsockname()[:2]
        return h, p
    return "?", 0


class ManagementService:
    def __init__(self, broker, server, host, management_port: int, metrics_port: int,
                 sample_interval: float | None = None, ssl_context=None, max_body_size: int | None = None,
                 metrics_host=""):
        self.broker = broker
        self.max_body_size = max_body_size if max_body_size is not None else max_body_size_from_env()
        self.import_lock = asyncio.Lock()   # definitions imports run one at a time (see api.py)
        self.ssl_context = ssl_context  # HTTPS for the management API (usagi-server --management-tls)
        self.server = server
        self.host = host
        self.metrics_host = host if metrics_host == "" else metrics_host    # prometheus.tcp.ip
        self.management_port = management_port
        self.metrics_port = metrics_port
        self.node = broker.config.node_name
        self.sampler = Sampler(broker, sample_interval or _interval())
        self.sampler.node_probe = self.node_figures     # the node's own history (node_stats_* ranges)
        self._runners: list = []
        self._listeners: list = []      # (protocol, host, port)
        self._sample_task = None
        self._sweep_task = None
        self.contents_cache = weakref.WeakKeyDictionary()   # queue -> last walk of its contents
        self._metrics_slots = None          # asyncio.Semaphore(METRICS_AT_ONCE), made on first use
        self.scrape_telemetry: dict = {}    # endpoint -> (scrapes, bytes, seconds): telemetry_scrape_*

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> "ManagementService":
        loop = asyncio.get_running_loop()
        ops.load_vhost_limits(self.broker)
        try:
            await self._start_listeners()
        except BaseException:
            await self.stop()
            raise
        self._sample_task = loop.create_task(self._sampling())
        self._sweep_task = loop.create_task(self._sweep_idle())
        return self

    async def _sweep_idle(self):
        """Close connections that hold no request under way for REQUEST_TIMEOUT: headers that never
        end, a client that never sends one. Survives its own failures (logged)."""
        loop = asyncio.get_running_loop()
        seen: dict = {}         # handler -> (requests it had handled, since when)
        timeout = _seconds_from_env("USAGI_MANAGEMENT_REQUEST_TIMEOUT", REQUEST_TIMEOUT)
        while True:
            await asyncio.sleep(min(SWEEP_INTERVAL, timeout / 4))
            try:
                now = loop.time()
                live = {}
                for runner in list(self._runners):
                    server = runner.server
                    for h in list(getattr(server, "connections", ()) if server is not None else ()):
                        if getattr(h, "_request_in_progress", True):
                            continue
                        n = getattr(h, "_request_count", None)
                        was = seen.get(h)
                        since = was[1] if was is not None and was[0] == n else now
                        if now - since >= timeout:
                            h.force_close()
                            continue
                        live[h] = (n, since)
                seen = live
            except Exception:
                upkeep.failed("closing idle management connections", log)

    async def _start_listeners(self):
        if self.management_port is not None and self.management_port >= 0:
            # the body cap is api.dispatch's; aiohttp's own applies to multipart uploads
            app = web.Application(client_max_size=max(self.max_body_size, 1))
            app.router.add_route("*", "/api", self._api, expect_handler=api.no_expect)
            app.router.add_route("*", "/api/{tail:.*}", self._api, expect_handler=api.no_expect)
            app.router.add_route("GET", "/", self._index)
            app.router.add_route("GET", "/{path:.+}", self._static)
            await self._listen(app, self.management_port, "https" if self.ssl_context is not None else "http")
        if self.metrics_port is not None and self.metrics_port >= 0:
            app = web.Application()
            app.router.add_route("GET", "/metrics", self._metrics)
            app.router.add_route("GET", "/metrics/per-object", self._metrics_per_object)
            app.router.add_route("GET", "/metrics/detailed", self._metrics_detailed)
            app.router.add_route("GET", "/metrics/memory-breakdown", self._metrics_memory_breakdown)
            await self._listen(app, self.metrics_port, "http/prometheus", self.metrics_host)

    async def _listen(self, app, port: int, protocol: str, host=""):
        host = self.host if host == "" else host
        # lingering_time=0: a body the handler did not read (a refused one) is not read after the
        # answer either; the connection is closed instead
        runner = web.AppRunner(app, access_log=None, handle_signals=False, lingering_time=0)
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True,
                           ssl_context=self.ssl_context if protocol == "https" else None)
        try:
            await site.start()
        except OSError as e:
            what = "management" if protocol in ("http", "https") else "metrics"
            raise OSError(e.errno, f"{what} listener on {host or '*'}:{port}: {e.strerror}") from None
        h, p = _sock_addr(site)
        self._listeners.append((protocol, h, p))

    async def stop(self):
        if self._sweep_task is not None:
            self._sweep_task.cancel()
            self._sweep_task = None
        if self._sample_task is not None:
            self._sample_task.cancel()
            try:
                await self._sample_task
            except (asyncio.CancelledError, Exception):
                pass
            self._sample_task = None
        for runner in reversed(self._runners):
            try:
                await runner.cleanup()
            except Exception:  # pragma: no cover - shutting down anyway
                log.exception("stopping a management listener")
        self._runners.clear()

    def describe(self) -> list[str]:
        out = []
        for protocol, h, p in self._listeners:
            what = "Management" if protocol in ("http", "https") else "Metrics"
            out.append(f"{what} listener on {h}:{p}" + (" (HTTPS)" if protocol == "https" else ""))
        return out

    async def _sampling(self):
        """The statistics timer: a sample every interval, each taken a slice at a time. A failed
        sample is logged (rate-limited) and the timer runs on."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                await self.sampler.sample_sliced(Pacer())
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the timer die
                upkeep.failed("statistics sampling", log)
            await asyncio.sleep(max(0.0, self.sampler.interval - (loop.time() - started)))

    # ------------------------------------------------------------------ node control
    def request_stop(self):
        """Stop the whole server as SIGTERM does, once the current response has gone out (a broker
        embedded in another program stops itself only: Server.on_stop_requested)."""
        hook = getattr(self.server, "on_stop_requested", None)
        if hook is not None:
            asyncio.get_running_loop().call_later(0.1, hook)
            return
        asyncio.get_running_loop().call_later(0.1, os.kill, os.getpid(), signal.SIGTERM)

    def run_soon(self, fn):
        """Run a server action (sync or async) after the current response has gone out."""
        loop = asyncio.get_running_loop()
        name = getattr(fn, "__name__", str(fn))

        def done(task):
            _actions.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.error("server action %s failed", name, exc_info=task.exception())

        def go():
            try:
                res = fn()
                if asyncio.iscoroutine(res):
                    task = loop.create_task(res)
                    _actions.add(task)          # held until done (the loop keeps only a weak reference)
                    task.add_done_callback(done)
            except Exception:
                log.exception("server action %s failed", name)
        loop.call_later(0.05, go)

    async def durable(self):
        """Wait until everything recorded so far is durable (raises CommitFailed if its commit fails)."""
        barrier = self.broker.on_commit_barrier
        if barrier is not None:
            await barrier()

    # ------------------------------------------------------------------ facts for the views
    def amqp_listeners(self) -> list:
        out = []
        for proto, h, p in getattr(self.server, "listeners", ()) or ():
            out.append(("amqp" if proto == "amqp" else "amqp/ssl", h, p))
        return out

    def http_listeners(self) -> list:
        return list(self._listeners)

    @property
    def management_bound_port(self) -> int | None:
        for proto, _h, p in self._listeners:
            if proto in ("http", "https"):
                return p
        return None

    def data_dir(self) -> str:
        return str(getattr(self.broker.store, "data_dir", "") or "")

    def disk_free(self) -> int:
        """Free disk space where the broker writes: the figure its disk alarm compares (core/alarms.py)."""
        free = self.broker.disk_free()
        return free if free is not None else 0

    def node_figures(self) -> dict:
        """What the node panel charts: memory (as the alarm counts it), file descriptors, sockets,
        free disk space."""
        return {"mem_used": self.broker.memory_usage(), "fd_used": self.fds()[0],
                "sockets_used": len(self.broker.connections), "proc_used": 1, "disk_free": self.disk_free()}

    @staticmethod
    def fds() -> tuple[int, int]:
        try:
            used = len(os.listdir("/proc/self/fd"))
        except OSError:
            used = 0
        try:
            total = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (OSError, ValueError):
            total = 1024
        return used, total

    # ------------------------------------------------------------------ handlers
    async def _api(self, request: web.Request) -> web.StreamResponse:
        return await api.dispatch(self, request)

    async def _index(self, request: web.Request) -> web.StreamResponse:
        index = STATIC_DIR / "index.html"
        if index.is_file():
            return web.FileResponse(index)
        return web.Response(status=404, text="Usagi management: no dashboard installed; the HTTP API is at /api/\n")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        rel = request.match_info["path"]
        base = STATIC_DIR.resolve()
        try:
            target = (base / rel).resolve()
        except (OSError, ValueError):
            raise web.HTTPNotFound() from None
        if base not in target.parents or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target)

    async def _exposition(self, request: web.Request, render, *args) -> web.StreamResponse:
        """A metrics answer written out as it is made (metrics.py), streamed once it passes
        api.Body.STREAM_AT. At most METRICS_AT_ONCE are made at a time (each may hold the records
        of every queue while it writes them): another waits its turn, up to METRICS_WAIT seconds
        (then 503). A client that goes away, or reads nothing for METRICS_WRITE_TIMEOUT seconds,
        ends the work."""
        slots = self._metrics_slots
        if slots is None:
            slots = self._metrics_slots = asyncio.Semaphore(METRICS_AT_ONCE)
        try:
            await asyncio.wait_for(slots.acquire(), METRICS_WAIT)
        except asyncio.TimeoutError:
            return web.Response(status=503, text="metrics are busy: try again later\n")
        try:
            body = api.Body(request, base={"Content-Type": metrics.CONTENT_TYPE})

            async def write(data: bytes):
                await asyncio.wait_for(body.write(data), METRICS_WRITE_TIMEOUT)
            await render(self, *args, write, Pacer())
            return await body.finish()
        except (ConnectionResetError, ConnectionError, asyncio.TimeoutError):
            raise web.HTTPBadRequest() from None
        finally:
            slots.release()

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        return await self._exposition(request, metrics.render_metrics)

    async def _metrics_per_object(self, request: web.Request) -> web.StreamResponse:
        return await self._exposition(request, metrics.render_per_object)

    async def _metrics_detailed(self, request: web.Request) -> web.StreamResponse:
        q = request.rel_url.query
        families = [f for v in q.getall("family", []) for f in v.split(",") if f]
        vhosts = q.getall("vhost", [])          # not split: a vhost name may hold a comma
        return await self._exposition(request, metrics.render_detailed, families, vhosts)

    async def _metrics_memory_breakdown(self, request: web.Request) -> web.StreamResponse:
        return await self._exposition(request, metrics.render_memory_breakdown)


def management_service(host, management_port: int, metrics_port: int, sample_interval: float | None = None,
                       ssl_context=None, max_body_size: int | None = None, metrics_host=""):
    """The service the server starts: `await svc(broker, server)` returns the running service.
    `max_body_size` is the cap on request bodies in bytes (None: USAGI_MANAGEMENT_MAX_BODY_SIZE,
    else RabbitMQ's 20,000,000); `metrics_host` the interface of the metrics listener ("": `host`'s)."""
    async def svc(broker, server):
        s = ManagementService(broker, server, host, management_port, metrics_port, sample_interval,
                              ssl_context=ssl_context, max_body_size=max_body_size, metrics_host=metrics_host)
        await s.start()
        return s
    return svc
