"""Usagi for test suites: a broker that the tests start and stop themselves, in memory, on a free port.

A project whose tests need a RabbitMQ (Celery, kombu, pika, aio-pika, ...) can start Usagi instead,
with nothing to install but this package and nothing to clean up afterwards:

    from usagi.testing import start_broker

    with start_broker() as broker:           # in a background thread of this process
        run_the_tests(broker.url)            # amqp://guest:guest@127.0.0.1:PORT/%2F

    broker = start_broker(mode="process")    # or as a child process: its own CPU, its own GIL
    ...
    broker.stop()

A broker keeps nothing on disk (a queue longer than its in-memory budget pages to a temporary
directory removed at exit), listens on 127.0.0.1 on a free port, its management API on another
(`management=False` leaves it out), and starts empty: the vhost "/" and the user guest/guest
(`user=`, `password=` choose another), nothing declared. `args` passes further usagi-server options,
such as ["--heartbeat", "0", "--max-message-size", "1048576"]; the USAGI_* environment variables
apply as they do to usagi-server.

In a thread, the broker is built by usagi-server's own start-up code and runs on an event loop of
its own; it honours the options that configure the broker and its management API (not TLS, cluster,
logging options or a configuration file: run those in a process). A configuration file is read only
when `args` names one (`--config FILE`): USAGI_CONFIG_FILE and RABBITMQ_CONFIG_FILE, meant for the
machine's own broker, are left out. A stop asked for through the management API (`usagictl stop`)
stops that broker, never the program that started it.

pytest users get the fixture `usagi_broker` from the plugin in usagi.testing.pytest_plugin, which
pytest loads on its own once this package is installed.

Importing this package is cheap (the broker's modules are imported on the first start): the
pytest plugin imports it in every test run of an environment where Usagi is installed.
"""
from __future__ import annotations

import atexit
import collections
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import weakref

__all__ = ["BrokerStartError", "UsagiBroker", "start_broker", "MODES"]

MODES = ("thread", "process")
START_TIMEOUT = 30.0        # seconds; a process start on a loaded machine can take a few
STOP_TIMEOUT = 15.0
STOP_CLOSE_WAIT = 0.25      # seconds a stop in a thread waits for clients to answer connection.close
#                             (usagi-server: 2 s); a client that is not reading reads the close later

_AMQP_RE = re.compile(r"AMQP listener on (\S+):(\d+)")
_MGMT_RE = re.compile(r"Management listener on (\S+):(\d+)( \(HTTPS\))?")
_running: "weakref.WeakSet[UsagiBroker]" = weakref.WeakSet()


class BrokerStartError(RuntimeError):
    """The broker did not start: the message says why (the process's last log lines, if any)."""


def start_broker(mode: str = "thread", *, management: bool = True, host: str = "127.0.0.1",
                 user: str = "guest", password: str = "guest", args=(),
                 timeout: float = START_TIMEOUT) -> "UsagiBroker":
    """Start a broker and return it once it accepts connections (see the module's docstring)."""
    return UsagiBroker(mode, management=management, host=host, user=user, password=password,
                       args=args).start(timeout)


class UsagiBroker:
    """A broker for tests. `start()` (or `with`) starts it; `url` is then its AMQP URL and
    `management_url` its management API's (None without one); `stop()` (or leaving the `with`
    block) stops it and frees its ports. A stopped broker can be started again, empty, on new ports."""

    def __init__(self, mode: str = "thread", *, management: bool = True, host: str = "127.0.0.1",
                 user: str = "guest", password: str = "guest", args=()):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self.management = management
        self.host = host
        self.user = user
        self.password = password
        self.vhost = "/"
        self.args = list(args)
        self.port: int | None = None
        self.management_port: int | None = None
        self._management_scheme = "http"
        self._runner = None

    # ------------------------------------------------------------------ addresses
    def _netloc(self, port: int) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        q = urllib.parse.quote
        return f"{q(self.user, safe='')}:{q(self.password, safe='')}@{host}:{port}"

    @property
    def url(self) -> str:
        """amqp://USER:PASSWORD@HOST:PORT/%2F (pika, kombu, Celery, aio-pika take it as it is)."""
        self._check_started()
        return f"amqp://{self._netloc(self.port)}/{urllib.parse.quote(self.vhost, safe='')}"

    @property
    def management_url(self) -> str | None:
        """http://USER:PASSWORD@HOST:PORT of the management API (its paths under /api/), or None."""
        self._check_started()
        if self.management_port is None:
            return None
        return f"{self._management_scheme}://{self._netloc(self.management_port)}"

    def _check_started(self):
        if self.port is None:
            raise RuntimeError("the broker is not started: call start() or use it in a `with` block")

    @property
    def running(self) -> bool:
        """Started and not stopped (a stop asked for through the management API counts)."""
        return self._runner is not None and self._runner.alive()

    @property
    def pid(self) -> int | None:
        """The broker's process: the child's, or this process's in a thread; None when stopped."""
        return self._runner.pid() if self._runner is not None else None

    def __repr__(self) -> str:
        where = f"port {self.port}" if self.port is not None else "not started"
        return f"<UsagiBroker {self.mode} {where}>"

    # ------------------------------------------------------------------ start and stop
    def argv(self) -> list:
        """The usagi-server options this broker runs with."""
        own = ["--in-memory", "--host", self.host, "--port", "0",
               "--default-user", self.user, "--default-pass", self.password]
        own += ["--management-port", "0", "--metrics-port", "0"] if self.management else ["--no-management"]
        return own + self.args

    def start(self, timeout: float = START_TIMEOUT) -> "UsagiBroker":
        if self._runner is not None:
            raise RuntimeError("the broker is already started")
        options = _parse(self.argv())
        if self.mode == "thread" and any(a == "--config" or a.startswith("--config=") for a in self.args):
            raise ValueError("a configuration file (--config) is read by a broker in a process: mode='process'")
        runner = _InThread(options) if self.mode == "thread" else _InProcess(self.argv(), options)
        self.port, mgmt = runner.start(timeout)
        self.management_port, self._management_scheme = mgmt if mgmt else (None, "http")
        self._runner = runner
        _running.add(self)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT):
        """Stop the broker and free its ports. Its clients' connections are closed with 320
        CONNECTION_FORCED, as at usagi-server's stop, which waits up to 2 s for clients to answer
        (a client that is not reading, such as an idle pika BlockingConnection, reads the close
        later); in a thread the wait is 0.25 s. Stopping a stopped broker does nothing."""
        runner, self._runner = self._runner, None
        _running.discard(self)
        if runner is not None:
            runner.stop(timeout)
        self.port = self.management_port = None

    def __enter__(self) -> "UsagiBroker":
        if self._runner is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


def _parse(argv: list):
    """usagi-server's options from its own parser: what a broker is built from, whichever the mode."""
    from ..cli.server import build_parser
    try:
        return build_parser().parse_args(argv)
    except SystemExit:      # argparse has printed why on stderr
        raise ValueError(f"invalid usagi-server options: {argv}") from None


def _stop_all():
    """Brokers in child processes still running when the program exits are stopped then: no child
    outlives it. (One in a thread ends with the program; by then its loop could not stop it
    gracefully anyway: no new threads can start.)"""
    for broker in list(_running):
        if broker.mode == "process":
            try:
                broker.stop(timeout=5.0)
            except Exception:  # noqa: BLE001 - exiting anyway
                pass


atexit.register(_stop_all)


class _InThread:
    """The broker on an event loop of its own in a daemon thread, built as usagi-server builds it."""

    def __init__(self, options):
        self.options = options
        self.loop = None
        self.stop_event = None
        self.error: BaseException | None = None
        self.ports = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="usagi-broker", daemon=True)

    def start(self, timeout: float):
        from ..cli.server import range_error
        error = range_error(self.options)       # what usagi-server refuses before it starts
        if error:
            raise BrokerStartError(f"the broker did not start: {error}")
        self.thread.start()
        if not self.ready.wait(timeout):
            self.stop(STOP_TIMEOUT)
            raise BrokerStartError(f"the broker did not start within {timeout:.0f} s")
        if self.error is not None or self.ports is None:
            raise BrokerStartError(f"the broker did not start: {self.error!r}") from self.error
        return self.ports

    def _run(self):
        import asyncio
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as e:  # noqa: BLE001 - reported by start() or logged
            if self.ports is None:
                self.error = e
            else:
                import logging
                logging.getLogger("usagi.testing").exception("the broker stopped with an error")
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                loop.close()
                self.ready.set()

    async def _serve(self):
        import asyncio

        from ..server.app import start_server, stop_server
        from ..server.startup import make_broker
        args = self.options
        broker, _counts = make_broker(args)
        services = []
        if not args.no_management and args.management_port != -1:
            from ..mgmt.service import management_service
            services.append(management_service(args.host or None, args.management_port, args.metrics_port,
                                               max_body_size=args.management_max_body_size))
        server, running = await start_server(broker, args.host or None, args.port, services)
        self.stop_event = asyncio.Event()
        server.on_stop_requested = self.stop_event.set
        server.stop_close_wait = STOP_CLOSE_WAIT
        self.loop = asyncio.get_running_loop()
        mport = running[0].management_bound_port if running else None
        self.ports = (server.amqp_port, (mport, "http") if mport is not None else None)
        self.ready.set()
        try:
            await self.stop_event.wait()
        finally:
            await stop_server(server, running)

    def alive(self) -> bool:
        return self.thread.is_alive()

    def pid(self) -> int:
        return os.getpid()

    def stop(self, timeout: float):
        loop, event = self.loop, self.stop_event
        if loop is not None and event is not None:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:        # the loop has closed meanwhile
                pass
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout)


class _InProcess:
    """usagi-server as a child process (usagi.testing.child), its ports read from its log."""

    def __init__(self, argv: list, options):
        self.argv = argv
        self.want_management = not options.no_management and options.management_port != -1
        self.proc: subprocess.Popen | None = None
        self.lines: collections.deque = collections.deque(maxlen=200)
        self.amqp = None
        self.mgmt = None
        self.seen = threading.Event()
        self.pump = None

    def start(self, timeout: float):
        # usagi-server under a watch on its stdin, a pipe from this process: when this process ends,
        # even killed (SIGKILL, where no atexit runs), the pipe closes and the broker stops
        cmd = [sys.executable, "-m", "usagi.testing.child", *self.argv, "--log-level", "info"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=_child_env(),
                                     errors="replace")
        self.pump = threading.Thread(target=self._pump, name="usagi-broker-log", daemon=True)
        self.pump.start()
        deadline = time.monotonic() + timeout
        while not self.seen.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                late = self.proc.poll() is None
                self.stop(STOP_TIMEOUT)
                self.pump.join(2.0)
                why = f"did not start within {timeout:.0f} s" if late else \
                    f"exited with status {self.proc.returncode}"
                raise BrokerStartError(f"the broker {why}; its last lines:\n" + "".join(self.lines))
        return self.amqp, self.mgmt

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.append(line)         # read on to the end, or the child blocks on a full pipe
            if self.seen.is_set():
                continue
            m = _AMQP_RE.search(line)
            if m and self.amqp is None:
                self.amqp = int(m.group(2))
            m = _MGMT_RE.search(line)
            if m and self.mgmt is None:
                self.mgmt = (int(m.group(2)), "https" if m.group(3) else "http")
            if self.amqp is not None and (self.mgmt is not None or not self.want_management):
                self.seen.set()
        self.proc.stdout.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float):
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.terminate()            # SIGTERM: a graceful stop, as usagi-server makes it
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.pump is not None and threading.current_thread() is not self.pump:
            self.pump.join(timeout)


def _child_env() -> dict:
    """The child runs the Usagi this process imported: from a source tree that is not installed,
    its directory goes on PYTHONPATH (never a site-packages directory, which would come before the
    standard library there). It reads no configuration file its options do not name."""
    import site
    env = {k: v for k, v in os.environ.items() if k not in ("USAGI_CONFIG_FILE", "RABBITMQ_CONFIG_FILE")}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    installed = set(site.getsitepackages() + [site.getusersitepackages()])
    if root not in installed:
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
