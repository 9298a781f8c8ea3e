"""Definitions loaded at start (rabbitmq.conf's `load_definitions`), so that a deployment is
reproducible: the users, vhosts, permissions, policies, queues, exchanges and bindings a file
describes exist when the first client connects.

As RabbitMQ: the path is a file, or a directory whose regular files are applied in the order of
their names; they are applied at every start, through the same checks and steps as an import
through the API (`POST /api/definitions`, ops.import_steps), acting as the internal user; a file
exported for one vhost (queues without a vhost field) is refused; and when definitions are to be
loaded, the default user and vhost are not created on a fresh node (the file says what exists).
A file that is refused changes nothing and stops the start with the file and the reason.
"""
from __future__ import annotations

import logging
import os
import stat
import time

from . import ops, slices
from .util import ApiError

log = logging.getLogger("usagi.mgmt")

ACTING_USER = "rmq-internal"        # as RabbitMQ's imports at boot
MAX_FILE_BYTES = 512 * 1024 * 1024  # a definitions file larger than this is refused unread
SECTIONS = ("users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters",
            "policies", "queues", "exchanges", "bindings")


class DefinitionsError(Exception):
    """A definitions file that cannot be applied: the text names the file and the reason."""


def definition_files(path: str) -> list:
    """The files a load_definitions path names: itself, or a directory's regular files by name."""
    if os.path.isdir(path):
        try:
            names = sorted(os.listdir(path))
        except OSError as e:
            raise DefinitionsError(f"{path}: cannot list the definitions directory: {e.strerror or e}") from None
        return [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
    return [path]


def _read(path: str):
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            # a device (/dev/zero would be read without end) or a FIFO (the start would wait forever
            # for a writer) is not read at all
            raise DefinitionsError(f"{path}: not a regular file (a device, FIFO or socket cannot hold "
                                   f"definitions)")
        with open(path, "rb") as f:
            # the size is checked on what is read, not on what stat says: a file may grow meanwhile
            raw = f.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise DefinitionsError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    except OSError as e:
        raise DefinitionsError(f"{path}: local definition file does not exist or cannot be read by the node "
                               f"({e.strerror or e})") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not raw.strip():
        return {}
    try:
        defs = slices.run(slices.decode_steps(raw))
    except ValueError as e:
        raise DefinitionsError(f"{path}: not a valid JSON document: {e}") from None
    if not isinstance(defs, dict):
        raise DefinitionsError(f"{path}: not a definitions document (a JSON object)")
    for section in ("queues", "exchanges", "bindings"):
        items = defs.get(section)
        if isinstance(items, list) and any(isinstance(d, dict) and "vhost" not in d for d in items):
            raise DefinitionsError(
                f"{path}: some queues, exchanges or bindings in the definition file are missing the virtual "
                f"host field. Such files are produced when definitions of a single virtual host are "
                f"exported. They cannot be used to import definitions at boot time")
    return defs


def load_at_boot(broker, path: str, commit: bool = True) -> dict:
    """Apply the definitions at `path` (see the module's docstring) and commit them (`commit`
    False: leave them pending, for a cluster leader's first replicated batch). Returns the count
    of elements applied by section. Raises DefinitionsError."""
    t0 = time.monotonic()
    counts = dict.fromkeys(SECTIONS, 0)
    files = definition_files(path)
    if os.path.isdir(path):
        log.info("Applying definitions from directory %s", path)
    for f in files:
        log.info("Applying definitions from file at '%s'", f)
        defs = _read(f)
        try:
            ops.import_definitions(broker, defs, acting_user=ACTING_USER)
        except ApiError as e:
            reason = e.reason if isinstance(e.reason, str) else \
                ": ".join(map(str, e.reason)) if isinstance(e.reason, list) else str(e.reason)
            raise DefinitionsError(f"{f}: definitions refused: {reason.strip()}") from None
        for section in SECTIONS:
            items = defs.get(section)
            if isinstance(items, list):
                counts[section] += len(items)
    if commit:
        broker.store.commit()
    log.info("Definitions applied from %s in %.2fs: %s", path, time.monotonic() - t0,
             ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n) or "nothing")
    return counts
