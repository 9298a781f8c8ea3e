"""Resource alarms: free disk space under the data dir and memory against their limits; publishers
are blocked while one is set.

The memory alarm compares what the broker holds (core/memory.py: message bytes, records, indexes,
buffers, plus the interpreter's own memory) with the limit: vm_memory_high_watermark as a fraction
of RAM, or its absolute form. So once a burst is deleted the alarm clears within a pass or two
(about a second), whatever the allocator kept. RSS is a backstop: the alarm is also set while RSS
is above the limit by RSS_MARGIN and the broker holds at least a quarter of the limit by its own
count, which catches an accounting that undercounts (an estimate off, memory it does not see)
without letting memory the allocator kept after a burst block an empty broker forever (RSS alone
would never clear). After large frees, memory the C allocator keeps is given back with
malloc_trim(0) (glibc), at most every TRIM_INTERVAL seconds: about 50 ms per GB freed, paid once.

The limits are set in one place each, in bytes, and everything reports them from there, so what
is shown is what the broker acts on: `memory_limit()` (vm_memory_high_watermark: a fraction of
RAM, or an absolute number of bytes, which wins) and `disk_free_limit()` (disk_free_limit: bytes,
or a fraction of RAM with `disk_free_limit_relative`), compared with `memory_usage()` and
`disk_free()`. /api/nodes (mem_used, mem_limit, disk_free, disk_free_limit, and so usagictl
status) and /metrics (rabbitmq_process_resident_memory_bytes, rabbitmq_resident_memory_limit_bytes,
rabbitmq_disk_space_available_bytes, rabbitmq_disk_space_available_limit_bytes) read these.
`memory_usage()` is the figure the alarm compares with the limit, the RSS backstop included
(RSS / RSS_MARGIN when that is what sets it), so the alarm is on exactly when it is over the limit.

Part of the engine (see broker.py): methods of Broker, split out by concern.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import time

from ..model.queue import PAGING
from .memory import Account


log = logging.getLogger("usagi.broker")

RSS_MARGIN = 1.5          # RSS above limit * RSS_MARGIN (with a quarter of it held) also sets the alarm
TRIM_INTERVAL = 10.0      # seconds between two malloc_trim calls
TRIM_SLACK = 64 << 20     # ... made when RSS exceeds the figure by this much more than after the last
#                           trim (or by 1/64 of the limit, if more)

_trim = None


def _malloc_trim():
    global _trim
    if _trim is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
            _trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)
        return True
    return False


_total_memory = None


def total_memory() -> int:
    """The machine's RAM in bytes (MemTotal, as RabbitMQ reads it), 0 if unknown; read once."""
    global _total_memory
    if _total_memory is None:
        _total_memory = _read_total_memory()
    return _total_memory


def _read_total_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return 0


def rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class AlarmMixin:
    _account = None           # core.memory.Account, made on first use
    _mem_base = None          # the interpreter's and code's memory (see core/memory.py)
    _mem_used = 0
    _mem_rss = 0
    _last_trim = 0.0
    _gap_after_trim = 0       # RSS minus the figure after the last trim (what trimming could not give back)
    memory_watermark_setting = None   # as last set at run time: {"relative": f} or {"absolute": bytes}

    # ------------------------------------------------------------------ resource alarms
    def alarm_reason(self) -> str:
        return "low on disk" if "disk" in self.alarms else "low on memory"

    def set_alarm(self, name: str, active: bool, figures: str = ""):
        """A memory or disk alarm: block publishers (connection.blocked and no more reading, once
        they publish) until it clears.
        `figures` (what was measured against what limit) goes into the log lines."""
        detail = f" ({figures})" if figures else ""
        if active and name not in self.alarms:
            self.alarms.add(name)
            log.warning("%s resource limit alarm set on node %s%s; publishers will be blocked until it clears",
                        name, self.config.node_name, detail)
            # connections are blocked (connection.blocked, not read from) when they next publish
            # (Connection.data_received), as RabbitMQ blocks them: consumers are never held up
        elif not active and name in self.alarms:
            self.alarms.discard(name)
            log.warning("%s resource limit alarm cleared on node %s%s", name, self.config.node_name, detail)
            if not self.alarms:
                for conn in list(self.connections):
                    conn.alarm_cleared()
            self.flush_output()

    def check_resources(self):
        """Free disk space where the broker writes against its limit (memory: see memory_tick)."""
        limit = self.disk_free_limit()
        if not limit:
            if "disk" in self.alarms:             # the limit was lifted
                self.set_alarm("disk", False)
            return
        if limit:
            free = self.disk_free()
            if free is not None:
                low = free < limit
                if low != ("disk" in self.alarms):
                    # RabbitMQ's line, then the alarm's
                    log.info("Free disk space is %s. Free bytes: %d. Limit: %d",
                             "insufficient" if low else "sufficient", free, limit)
                self.set_alarm("disk", low, f"free disk space {free} bytes, limit {limit} bytes")

    # ------------------------------------------------------------------ limits
    def disk_path(self) -> str:
        """Where the broker writes: its data dir, else (in memory) the directory queues page out to."""
        return self.config.data_dir or PAGING.get("dir") or os.getcwd()

    def disk_free(self) -> int | None:
        """Free bytes on the disk of disk_path() (None if it cannot be read)."""
        try:
            return shutil.disk_usage(self.disk_path()).free
        except OSError:
            return None

    def disk_free_limit(self) -> int:
        """The free disk space low watermark in bytes (0: none)."""
        c = self.config
        rel = getattr(c, "disk_free_limit_relative", 0) or 0
        if rel > 0:
            return int(round(total_memory() * rel))
        return int(c.disk_free_limit or 0)

    def memory_limited(self) -> bool:
        """Whether the memory alarm is evaluated: always, except with a relative watermark when the
        RAM size cannot be read. A watermark of 0 is a limit of 0 bytes: the alarm is set at once
        and every publisher is blocked (RabbitMQ's way to stop publishing), never "no limit"."""
        c = self.config
        if (getattr(c, "memory_high_watermark_absolute", 0) or 0) > 0:
            return True
        return c.memory_high_watermark is not None and (not c.memory_high_watermark or total_memory() > 0)

    def memory_limit(self) -> int:
        """The memory high watermark in bytes (see memory_limited() for what 0 means)."""
        c = self.config
        absolute = getattr(c, "memory_high_watermark_absolute", 0) or 0
        if absolute > 0:
            return int(absolute)
        frac = c.memory_high_watermark
        if not frac:
            return 0
        return int(round(total_memory() * frac))

    def set_memory_high_watermark(self, relative: float | None = None, absolute: int | None = None):
        """A new memory watermark (rabbitmqctl set_vm_memory_high_watermark): a fraction of RAM, or
        bytes; the alarm is evaluated against it at once."""
        c = self.config
        if absolute is not None:
            c.memory_high_watermark_absolute = int(absolute)
            self.memory_watermark_setting = {"absolute": int(absolute)}
        else:
            c.memory_high_watermark_absolute = 0
            c.memory_high_watermark = float(relative or 0)
            self.memory_watermark_setting = {"relative": float(relative or 0)}
        if self._account is not None and self._account.figures is not None:
            self._memory_pass_done()

    def set_disk_free_limit(self, absolute: int | None = None, relative: float | None = None):
        """A new free disk space limit (rabbitmqctl set_disk_free_limit): bytes, or a fraction of
        RAM; the alarm is evaluated against it at once."""
        c = self.config
        if relative is not None:
            c.disk_free_limit_relative = float(relative)
            c.disk_free_limit = 0           # a relative limit of 0: none
        else:
            c.disk_free_limit_relative = 0.0
            c.disk_free_limit = int(absolute or 0)
        self.check_resources()

    # ------------------------------------------------------------------ memory

    def memory_tick(self):
        """A bounded step of the memory accounting (every fast tick); at the end of a pass, the
        alarm is evaluated."""
        acct = self._account
        if acct is None:
            acct = self._account = Account()
        if not acct.due(time.monotonic()):
            return
        if acct.step(self):
            self._memory_pass_done()

    def memory_usage(self) -> int:
        """The memory figure the alarm compares with memory_limit() (bytes): what the broker holds
        plus the interpreter's base, or RSS / RSS_MARGIN when that backstop is what sets it."""
        if self._account is None or self._account.figures is None:
            self._account = self._account or Account()
            self._account.run(self)
            self._memory_pass_done()
        return self._mem_used

    def memory_breakdown(self) -> dict:
        """The figures of the last pass, by kind, with the base and RSS (for tools and tests)."""
        self.memory_usage()
        d = dict(self._account.figures)
        d["base"] = self._mem_base or 0
        d["used"] = self._mem_used
        d["rss"] = self._mem_rss
        d["limit"] = self.memory_limit()
        return d

    def _memory_pass_done(self):
        held = self._account.held
        r = rss()
        base = max(0, r - held)
        if self._mem_base is None or base < self._mem_base:
            self._mem_base = base
        used = self._mem_base + held
        limit = self.memory_limit()
        now = time.monotonic()
        slack = max(TRIM_SLACK, limit // 64)
        if r - used > self._gap_after_trim + slack and now - self._last_trim >= TRIM_INTERVAL:
            # memory was freed and the allocator kept it: give it back
            t0 = time.perf_counter()
            if _malloc_trim():
                r2 = rss()
                log.info("memory: %d MiB freed by the broker given back to the system in %.0f ms (RSS %d -> "
                         "%d MiB)", (r - r2) >> 20, (time.perf_counter() - t0) * 1000, r >> 20, r2 >> 20)
                r = r2
            self._last_trim = now
            self._gap_after_trim = max(0, r - used)
        if limit and held >= limit // 4 and r > limit * RSS_MARGIN:
            used = max(used, int(r / RSS_MARGIN))     # the backstop: memory the accounting does not see
        self._mem_used = used
        self._mem_rss = r
        if self.memory_limited():
            over = used > limit
            if over != ("memory" in self.alarms):
                log.info("vm_memory_high_watermark %s. Memory used:%d allowed:%d", "set" if over else "clear",
                         used, limit)
                log.info("memory: %d bytes held (%d counted with the interpreter's %d), RSS %d, limit %d",
                         held, used, self._mem_base, r, limit)
            self.set_alarm("memory", over, f"memory used {used} bytes, limit {limit} bytes, RSS {r} bytes")
