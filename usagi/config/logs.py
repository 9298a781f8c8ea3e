"""The log's outputs, as an operator sets them: the console, a file with rotation, plain text or
JSON, a level per output and per category (RabbitMQ's log.* settings; see rabbitconf.py).

The plain-text line is `TIME [LEVEL] LOGGER: MESSAGE`. A JSON line carries RabbitMQ's field names
(`time` in RFC 3339 with a space, `level` in lower case, `msg`) plus `logger` and `pid`, so that
tools reading RabbitMQ's JSON logs read Usagi's.

Rotation: with `log.file.rotation.size`, the file is rotated when it would grow past that many
bytes, keeping `log.file.rotation.count` old files (FILE.1 the newest); with a count of 0 the file
is emptied instead, as RabbitMQ's logger does. `rotate()` rotates now (the management API and
`usagictl rotate_logs` can call it); `reopen()` closes and opens the file again, for an external
tool such as logrotate that moved it away (usagi-server calls it on SIGUSR1).
"""
from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import sys
from dataclasses import dataclass, field

NOTICE = 25
logging.addLevelName(NOTICE, "NOTICE")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "notice": NOTICE, "warning": logging.WARNING,
          "error": logging.ERROR, "critical": logging.CRITICAL, "alert": logging.CRITICAL,
          "emergency": logging.CRITICAL, "none": logging.CRITICAL + 10}
PLAIN_FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


def level_of(name: str) -> int:
    return LEVELS[str(name).lower()]


class JSONFormatter(logging.Formatter):
    """One JSON object per line, with RabbitMQ's field names."""

    def format(self, record: logging.LogRecord) -> str:
        t = datetime.datetime.fromtimestamp(record.created).astimezone()
        d = {"time": t.isoformat(sep=" ", timespec="microseconds"), "level": record.levelname.lower(),
             "msg": record.getMessage(), "logger": record.name, "pid": record.process}
        if record.exc_info:
            d["exception"] = self.formatException(record.exc_info)
        return json.dumps(d, ensure_ascii=False)


class RotatingFile(logging.handlers.RotatingFileHandler):
    """RotatingFileHandler that empties the file when it keeps no old ones (count 0), rotates on
    request, and reopens after an external rotation."""

    def shouldRollover(self, record) -> int:
        return 1 if self.maxBytes > 0 and super().shouldRollover(record) else 0

    def doRollover(self):
        if self.backupCount > 0:
            return super().doRollover()
        if self.stream:
            self.stream.close()
            self.stream = None
        self.stream = open(self.baseFilename, "w", encoding=self.encoding)

    def reopen(self):
        self.acquire()
        try:
            if self.stream:
                self.stream.close()
            self.stream = self._open()
        finally:
            self.release()

    def rotate_now(self):
        self.acquire()
        try:
            self.doRollover()
        finally:
            self.release()


@dataclass
class LogSettings:
    console: bool = True
    console_level: str = "info"
    console_format: str = "plaintext"
    console_stream: str = "stderr"
    file: str | None = None
    file_level: str = "info"
    file_format: str = "plaintext"
    rotation_size: int = 0
    rotation_count: int = 0
    categories: dict = field(default_factory=dict)     # logger name (None: "usagi") -> level name


_handlers: list = []          # what setup() installed on the root logger
_file: list = []              # the file handler, if any


class _Levels(logging.Filter):
    """An output's level, except for the categories given a level of their own (log.connection.level
    = debug shows the connections' debug lines on every output that is on)."""

    def __init__(self, level: int, categories: dict):
        super().__init__()
        self.level = level
        self.categories = sorted(categories.items(), key=lambda kv: -len(kv[0]))   # most specific first

    def filter(self, record: logging.LogRecord) -> bool:
        if self.level > logging.CRITICAL:           # this output is off ("none")
            return False
        name = record.name
        for prefix, level in self.categories:
            if name == prefix or name.startswith(prefix + "."):
                return record.levelno >= level
        return record.levelno >= self.level


def _formatter(kind: str) -> logging.Formatter:
    return JSONFormatter() if kind == "json" else logging.Formatter(PLAIN_FORMAT)


def setup(ls: LogSettings) -> None:
    """Install the outputs on the root logger (replacing those of an earlier call). Raises OSError
    when the file cannot be opened."""
    root = logging.getLogger()
    categories = {(name or "usagi"): level_of(level) for name, level in ls.categories.items()}
    handlers = []
    if ls.file:
        os.makedirs(os.path.dirname(os.path.abspath(ls.file)), exist_ok=True)
        h = RotatingFile(ls.file, maxBytes=max(0, ls.rotation_size), backupCount=max(0, ls.rotation_count),
                         encoding="utf-8")
        h.addFilter(_Levels(level_of(ls.file_level), categories))
        h.setFormatter(_formatter(ls.file_format))
        handlers.append(h)
    if ls.console:
        h = logging.StreamHandler(sys.stdout if ls.console_stream == "stdout" else sys.stderr)
        h.addFilter(_Levels(level_of(ls.console_level), categories))
        h.setFormatter(_formatter(ls.console_format))
        handlers.append(h)
    for h in _handlers:
        root.removeHandler(h)
        h.close()
    _handlers[:] = handlers
    _file[:] = [h for h in handlers if isinstance(h, RotatingFile)]
    for h in handlers:
        root.addHandler(h)
    root.setLevel(min([f.level for h in handlers for f in h.filters], default=logging.CRITICAL + 10))
    for name, level in categories.items():
        logging.getLogger(name).setLevel(level)


def file_path() -> str | None:
    """The log file being written, if any."""
    return _file[0].baseFilename if _file else None


def rotate() -> bool:
    """Rotate the log file now (rotation count 0: empty it). False when there is no log file."""
    if not _file:
        return False
    _file[0].rotate_now()
    logging.getLogger("usagi").info("log file rotated on request")
    return True


def reopen() -> bool:
    """Close and reopen the log file (after an external tool moved it away). False without one."""
    if not _file:
        return False
    _file[0].reopen()
    logging.getLogger("usagi").info("log file reopened")
    return True


def set_level(name: str) -> None:
    """Set every output's level at run time (rabbitmqctl set_log_level): the console's and the
    file's; the levels given to categories stay. Raises KeyError for an unknown level name."""
    value = level_of(name)
    for h in _handlers:
        for f in h.filters:
            if isinstance(f, _Levels):
                f.level = value
    levels = [f.level for h in _handlers for f in h.filters if isinstance(f, _Levels)]
    logging.getLogger().setLevel(min(levels + [value]))


def level() -> str | None:
    """The outputs' level (the lowest, by name), or None before setup()."""
    levels = [f.level for h in _handlers for f in h.filters if isinstance(f, _Levels)]
    if not levels:
        return None
    low = min(levels)
    return next((n for n, v in LEVELS.items() if v == low), logging.getLevelName(low).lower())
