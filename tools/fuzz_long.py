"""Long fuzzing of the wire protocol code, in process: frames, the method codec and the sans-IO Connection.

    python tools/fuzz_long.py --inputs 1000000 [--engine atheris|random|hypothesis] [--target all]

The invariant: whatever bytes come in, the code under test gives frames (or methods) or a protocol
error (usagi.amqp.errors.AMQPError, usagi.amqp.frames.BadProtocolHeader), never another exception;
the Connection, which turns its own internal errors into connection.close 541 and a logged
traceback, must never log one.

Targets (the first input byte picks one under --target all):
  frames      FrameReader fed the bytes split at input-chosen points, with and without the
              protocol header, at a small and a large frame_max; the frames found are re-checked
              against one another (the same stream fed whole must give the same frames)
  methods     every method class decoding the bytes (class and method ids from the input), and
              a decoded method encoded again and decoded to the same value
  connection  a Connection on a fake transport, after a valid handshake (or not), fed the bytes in
              input-chosen pieces, with timers, flushes and closes in between; one broker per
              few thousand inputs so state builds up

Engines: atheris (coverage-guided libFuzzer, if installed), random (mutations of a corpus of valid
frames, fast, no dependency), hypothesis (structured generation). A crashing input is written to
--crash-dir and the run goes on (random, hypothesis) or stops (atheris, as libFuzzer does). Each
crash should become a regression test in tests/abuse/test_fuzz_inprocess.py.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import random
import struct
import sys
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGETS = ("frames", "methods", "connection")


def _import_usagi():
    global M, AMQPError, BadProtocolHeader, FrameReader, PROTOCOL_HEADER, method_frame, Broker, Config, \
        Connection, limits, table
    from usagi.amqp import methods as M  # noqa: F811
    from usagi.amqp import table  # noqa: F811
    from usagi.amqp.errors import AMQPError  # noqa: F811
    from usagi.amqp.frames import PROTOCOL_HEADER, BadProtocolHeader, FrameReader, method_frame  # noqa: F811
    from usagi.core import limits  # noqa: F811
    from usagi.core.broker import Broker, Config  # noqa: F811
    from usagi.core.connection import Connection  # noqa: F811


class Crash(Exception):
    """The invariant broke: `cause` is what escaped."""

    def __init__(self, target, cause):
        super().__init__(f"{target}: {type(cause).__name__}: {cause}")
        self.target = target
        self.cause = cause


# ---------------------------------------------------------------------------------------- frames
def _splits(data: bytes, ctl: int) -> list:
    if not data:
        return [b""]
    step = (ctl % 37) + 1
    out = []
    i = 0
    k = ctl
    while i < len(data):
        n = 1 + (k % (step * 3))
        out.append(data[i:i + n])
        i += n
        k = (k * 1103515245 + 12345) & 0x7FFFFFFF
    return out


def check_frames(data: bytes):
    if len(data) < 2:
        return
    ctl, flags = data[0], data[1]
    body = data[2:]
    expect_header = bool(flags & 1)
    fmax = (0, 4096, 8192, 131072)[(flags >> 1) & 3]
    if flags & 8:
        body = PROTOCOL_HEADER + body
    results = []
    for pieces in ([body], _splits(body, ctl)):
        r = FrameReader(frame_max=fmax, expect_header=expect_header)
        frames = []
        try:
            for p in pieces:
                frames += r.feed(p)
                if r.error is not None:
                    break
        except Exception as e:      # the reader reports errors through .error; it never raises
            raise Crash("frames", e) from e
        err = r.error
        if err is not None and not isinstance(err, (AMQPError, BadProtocolHeader)):
            raise Crash("frames", err)
        for f in frames:
            if f[0] == "header":
                continue
            t, ch, payload = f
            if t not in (1, 2, 3, 8) or not 0 <= ch <= 65535 or (fmax and len(payload) > fmax):
                raise Crash("frames", AssertionError(f"bad frame {t} {ch} {len(payload)}"))
        results.append((frames, type(err).__name__ if err else None))
    # the same stream, split differently: the same frames and the same verdict
    (fa, ea), (fb, eb) = results
    if [tuple(map(bytes, f[2:])) + f[:2] for f in fa] != [tuple(map(bytes, f[2:])) + f[:2] for f in fb] or ea != eb:
        raise Crash("frames", AssertionError(f"split changed the result: {len(fa)}/{ea} vs {len(fb)}/{eb}"))


# ---------------------------------------------------------------------------------------- methods
_METHOD_KEYS = None


def check_methods(data: bytes):
    global _METHOD_KEYS
    if _METHOD_KEYS is None:
        _METHOD_KEYS = sorted(M.METHODS)
    if not data:
        return
    key = _METHOD_KEYS[data[0] % len(_METHOD_KEYS)]
    cls = M.METHODS[key]
    payload = struct.pack(">I", key) + data[1:]
    try:
        m = cls.decode(payload, 4, len(payload))
    except AMQPError:
        return
    except Exception as e:
        raise Crash("methods", e) from e
    try:
        again = m.encode()
    except Exception as e:
        raise Crash("methods", e) from e
    try:
        m2 = cls.decode(again, 4, len(again))      # encode() gives class and method ids too
    except Exception as e:
        raise Crash("methods", e) from e
    if not _same(m, m2):
        raise Crash("methods", AssertionError(f"re-encoded method decodes differently: {m!r} != {m2!r}"))


def _same(a, b) -> bool:
    if a == b:
        return True
    # NaN in a table never equals itself
    return repr(a) == repr(b)


# ---------------------------------------------------------------------------------------- connection
class FakeTransport:
    __slots__ = ("written", "closed", "paused", "buffer")

    def __init__(self):
        self.written = 0
        self.closed = False
        self.paused = False
        self.buffer = 0

    def write(self, data):
        if self.closed:
            return
        self.written += len(data)

    def close(self):
        self.closed = True

    def abort(self):
        self.closed = True

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def get_write_buffer_size(self):
        return self.buffer


class _Trap(logging.Handler):
    """Collects log records that carry a traceback: the Connection logs its internal errors so."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        if record.exc_info:
            self.records.append(record)


class ConnectionHarness:
    def __init__(self, recycle_every: int = 3000):
        self.recycle_every = recycle_every
        self.n = 0
        self.broker = None
        self.deferred = []
        self.trap = _Trap()
        lg = logging.getLogger("usagi")
        lg.addHandler(self.trap)
        lg.setLevel(logging.ERROR)
        lg.propagate = False
        self._prefix = None

    def _new_broker(self):
        b = Broker(Config(consumer_timeout=0.001))
        b.bootstrap()
        b.on_defer = self.deferred.append
        self.broker = b

    def prefix(self, flags: int) -> bytes:
        if self._prefix is None:
            start_ok = method_frame(0, M.ConnectionStartOk(
                {"product": "fuzz", "capabilities": {"authentication_failure_close": True,
                                                     "connection.blocked": True, "consumer_cancel_notify": True,
                                                     "publisher_confirms": True}},
                "PLAIN", b"\0guest\0guest", "en_US").encode())
            self._prefix = {
                "start": start_ok,
                "tune": method_frame(0, M.ConnectionTuneOk(2047, 131072, 0).encode()),
                "open": method_frame(0, M.ConnectionOpen("/").encode()),
                "ch": method_frame(1, M.ChannelOpen().encode()),
                "q": method_frame(1, M.QueueDeclare(0, "fz", False, False, False, False, False, {}).encode()),
                "c": method_frame(1, M.BasicConsume(0, "fz", "", False, False, False, False, {}).encode()),
                "cf": method_frame(1, M.ConfirmSelect(False).encode()),
            }
        p = self._prefix
        out = b""
        if flags & 1:
            out += PROTOCOL_HEADER
            if flags & 2:
                out += p["start"] + p["tune"] + p["open"] + p["ch"]
                if flags & 4:
                    out += p["q"] + p["c"]
                if flags & 8:
                    out += p["cf"]
        return out

    def check(self, data: bytes):
        if self.broker is None or self.n % self.recycle_every == 0:
            self._new_broker()
        self.n += 1
        if len(data) < 2:
            return
        flags, ctl = data[0], data[1]
        stream = self.prefix(flags) + data[2:]
        t = FakeTransport()
        b = self.broker
        self.trap.records.clear()
        try:
            conn = Connection(b, t, ("10.0.0.%d" % (1 + ctl % 200), 40000 + ctl), ("127.0.0.1", 5672))
            conn.connection_made()
            for i, piece in enumerate(_splits(stream, ctl)):
                if flags & 16 and i % 3 == 2:
                    t.buffer = 1 << 30
                    conn.pause_writing()
                    conn.resume_writing()
                    t.buffer = 0
                conn.data_received(piece)
                self._drain()
                b.flush_output()
            if flags & 32:
                b.timers()
                b.tick(time.time())
                limits.sweep(b, time.monotonic() + 10)
                b.set_alarm("memory", True)
                conn.data_received(b"")
                b.set_alarm("memory", False)
            self._drain()
            b.flush_output()
            if flags & 64:
                conn.force_close(320, "fuzz")
            else:
                conn.connection_lost()
            self._drain()
            b.flush_output()
        except Exception as e:
            raise Crash("connection", e) from e
        if self.trap.records:
            rec = self.trap.records[0]
            raise Crash("connection", RuntimeError("internal error logged:\n"
                                                   + "".join(traceback.format_exception(*rec.exc_info))))

    def _drain(self):
        n = 0
        while self.deferred and n < 10000:
            fn = self.deferred.pop(0)
            fn()
            n += 1


# ---------------------------------------------------------------------------------------- dispatch
class Runner:
    def __init__(self, target: str):
        self.target = target
        self.conn = None

    def __call__(self, data: bytes):
        target = self.target
        if target == "all":
            if not data:
                return
            target = TARGETS[data[0] % len(TARGETS)]
            data = data[1:]
        if target == "frames":
            check_frames(data)
        elif target == "methods":
            check_methods(data)
        else:
            if self.conn is None:
                self.conn = ConnectionHarness()
            self.conn.check(data)


def corpus() -> list:
    """Seed inputs for `all`: valid frames and methods of every kind, in the targets' layouts."""
    seeds = []
    keys = sorted(M.METHODS)
    for i, key in enumerate(keys):
        try:
            payload = M.METHODS[key]().encode()
        except Exception:
            continue
        seeds.append(bytes([1, i % 256]) + payload)                        # methods
        seeds.append(bytes([0, 7, 0x0F]) + method_frame(1, struct.pack(">I", key) + payload))   # frames
    publish = (method_frame(1, M.BasicPublish(0, "", "fz", False, False).encode())
               + struct.pack(">BHI", 2, 1, 14) + struct.pack(">HHQ", 60, 0, 3) + b"\x00\x00\xce"
               + struct.pack(">BHI", 3, 1, 3) + b"abc\xce")
    hdr_table = struct.pack(">HHQ", 60, 0, 0) + b"\x20\x00" + table.encode_table(
        {"a": 1, "b": [1, "x", {"c": None, "d": 1.5}], "e": b"\xff", "f": True})
    for flags in (0x0F, 0x03, 0x2F, 0x4F, 0x1F, 0x01):
        seeds.append(bytes([2, flags, 5]) + publish + method_frame(1, M.BasicAck(1, False).encode()))
        seeds.append(bytes([2, flags, 11]) + method_frame(1, M.BasicPublish(0, "amq.topic", "a.b", True, False).encode())
                     + struct.pack(">BHI", 2, 1, len(hdr_table)) + hdr_table + b"\xce")
    seeds.append(bytes([2, 0x0F, 3]) + method_frame(1, M.QueueDeclare(0, "q2", False, False, True, False, False,
                                                                      {"x-max-length": 1, "x-message-ttl": 0}).encode()))
    return seeds


# ---------------------------------------------------------------------------------------- engines
def mutate(rng: random.Random, seeds: list) -> bytes:
    b = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 6)):
        r = rng.random()
        if r < 0.35 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif r < 0.45 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif r < 0.55 and b:
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 16)]
        elif r < 0.65:
            i = rng.randrange(len(b) + 1)
            b[i:i] = os.urandom(rng.randint(1, 16))
        elif r < 0.75 and len(b) > 4:
            i = rng.randrange(len(b) - 4)
            b[i:i + 4] = struct.pack(">I", rng.choice((0, 1, 127, 128, 255, 256, 4095, 4096, 65535, 65536,
                                                       2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, rng.randrange(2 ** 32))))
        elif r < 0.85:
            other = rng.choice(seeds)
            i = rng.randrange(len(b) + 1)
            j = rng.randrange(len(other) + 1)
            b[i:] = other[j:] + bytes(b[i:])[:rng.randint(0, 64)]
        elif r < 0.92 and len(b) > 2:
            # splice in a nested table or array header
            i = rng.randrange(2, len(b))
            b[i:i] = rng.choice((b"F\x00\x00\x00\x06\x01aF\x00", b"A\x00\x00\x00\x05A\x00\x00", b"S\xff\xff\xff\xff",
                                 b"D\xff\x80\x00\x00\x00", b"d\x7f\xf8\x00\x00\x00\x00\x00\x01", b"x\x00\x00\x00"))
        else:
            b += os.urandom(rng.randint(1, 32))
    return bytes(b[:65536])


def save_crash(crash_dir: str, data: bytes, exc: Exception) -> str:
    os.makedirs(crash_dir, exist_ok=True)
    h = hashlib.sha1(data).hexdigest()[:16]
    path = os.path.join(crash_dir, f"crash-{h}.bin")
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".txt", "w") as f:
        f.write("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return path


def run_random(runner, inputs: int, seconds: float | None, seed: int, crash_dir: str | None, log=print) -> dict:
    rng = random.Random(seed)
    seeds = corpus()
    if runner.target != "all":
        # the seeds are laid out for `all`: drop the target byte
        idx = TARGETS.index(runner.target)
        seeds = [s[1:] for s in seeds if s[0] == idx] or [b"\0\0"]
    t0 = time.monotonic()
    crashes = {}
    n = 0
    last = t0
    while n < inputs and (seconds is None or time.monotonic() - t0 < seconds):
        data = mutate(rng, seeds) if rng.random() < 0.95 else os.urandom(rng.randint(0, 256))
        n += 1
        try:
            runner(data)
        except Crash as e:
            key = (e.target, type(e.cause).__name__, str(e.cause).splitlines()[-1][:120] if str(e.cause) else "")
            if key not in crashes:
                crashes[key] = save_crash(crash_dir, data, e) if crash_dir else data
                log(f"CRASH #{len(crashes)} {e}")
        now = time.monotonic()
        if now - last > 30:
            last = now
            log(f"  {n} inputs, {n / (now - t0):.0f}/s, {len(crashes)} distinct crashes")
    return {"engine": "random", "inputs": n, "seconds": round(time.monotonic() - t0, 1),
            "crashes": len(crashes), "crash_files": [str(v) for v in crashes.values()] if crash_dir else []}


def run_hypothesis(runner, inputs: int, seconds: float | None, seed: int, crash_dir: str | None, log=print) -> dict:
    from hypothesis import HealthCheck, given, seed as hseed, settings, strategies as st
    seeds = corpus()
    t0 = time.monotonic()
    count = [0]
    crashes = {}

    @hseed(seed)
    @settings(max_examples=inputs, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=2048),
                     st.builds(lambda s, i, b, c: s[:i] + b + s[i + c:],
                               st.sampled_from(seeds), st.integers(0, 200), st.binary(max_size=32),
                               st.integers(0, 32))))
    def prop(data):
        if seconds is not None and time.monotonic() - t0 > seconds:
            return
        count[0] += 1
        try:
            runner(data)
        except Crash as e:
            key = (e.target, type(e.cause).__name__)
            if key not in crashes:
                crashes[key] = save_crash(crash_dir, data, e) if crash_dir else data
                log(f"CRASH {e}")
    prop()
    return {"engine": "hypothesis", "inputs": count[0], "seconds": round(time.monotonic() - t0, 1),
            "crashes": len(crashes), "crash_files": [str(v) for v in crashes.values()] if crash_dir else []}


def run_atheris(target: str, inputs: int, seconds: float | None, crash_dir: str, extra: list) -> None:
    import atheris
    with atheris.instrument_imports(include=["usagi"]):
        _import_usagi()
    runner = Runner(target)
    corpus_dir = os.path.join(crash_dir, f"corpus-{target}")
    os.makedirs(corpus_dir, exist_ok=True)
    if not os.listdir(corpus_dir):
        seeds = corpus()
        if target != "all":
            idx = TARGETS.index(target)
            seeds = [s[1:] for s in seeds if s[0] == idx]
        for i, s in enumerate(seeds):
            with open(os.path.join(corpus_dir, f"seed-{i}"), "wb") as f:
                f.write(s)

    def one(data: bytes):
        try:
            runner(data)
        except Crash as e:
            # re-raise the escaped exception so libFuzzer records the input as a crash
            raise e.cause from None

    args = [sys.argv[0], f"-runs={inputs}", f"-artifact_prefix={crash_dir.rstrip('/')}/", "-max_len=4096",
            "-print_final_stats=1", "-rss_limit_mb=4096", corpus_dir, *extra]
    if seconds:
        args.insert(1, f"-max_total_time={int(seconds)}")
    atheris.Setup(args, one)
    atheris.Fuzz()


def replay(paths: list, target: str) -> int:
    _import_usagi()
    runner = Runner(target)
    bad = 0
    for p in paths:
        with open(p, "rb") as f:
            data = f.read()
        try:
            runner(data)
            print(f"ok     {p}")
        except Crash as e:
            bad += 1
            print(f"CRASH  {p}: {e}")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, help="stop after this long even if --inputs is not reached")
    ap.add_argument("--engine", choices=["auto", "atheris", "random", "hypothesis"], default="auto")
    ap.add_argument("--target", choices=["all", *TARGETS], default="all")
    ap.add_argument("--seed", type=int, default=20261125)
    ap.add_argument("--crash-dir", default=os.path.join(ROOT, "fuzz-crashes"))
    ap.add_argument("--replay", nargs="*", help="run these saved inputs and exit")
    ap.add_argument("libfuzzer_args", nargs="*", help="passed to libFuzzer (atheris engine), after --")
    a = ap.parse_args(argv)
    if a.replay:
        return replay(a.replay, a.target)
    engine = a.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
    print(f"fuzz_long: engine {engine}, target {a.target}, {a.inputs} inputs"
          + (f", at most {a.seconds:.0f} s" if a.seconds else ""), flush=True)
    if engine == "atheris":
        run_atheris(a.target, a.inputs, a.seconds, a.crash_dir, a.libfuzzer_args)
        return 0
    _import_usagi()
    runner = Runner(a.target)
    fn = run_random if engine == "random" else run_hypothesis
    res = fn(runner, a.inputs, a.seconds, a.seed, a.crash_dir, log=lambda s: print(s, flush=True))
    print(f"fuzz_long: {res['inputs']} inputs in {res['seconds']} s, {res['crashes']} distinct crashes", flush=True)
    for p in res["crash_files"]:
        print("  ", p)
    return 1 if res["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
