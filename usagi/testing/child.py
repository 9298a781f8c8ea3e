"""The child process of a test broker started with mode="process": usagi-server, stopped when the
program that started it goes away.

A test run killed with SIGKILL (a CI job's timeout, an editor's stop button) runs no clean-up, so it
cannot stop the brokers it started: they would keep running, holding their ports and memory, with
no one to stop them. The parent holds the write end of a pipe that is this process's stdin; when
the parent ends, however it ends, the pipe closes, this process reads its end, and it stops as
usagi-server stops on SIGTERM (gracefully: clients get connection.close).

    python -m usagi.testing.child USAGI-SERVER-OPTIONS...
"""
from __future__ import annotations

import os
import signal
import sys
import threading


def _watch_parent():
    try:
        while os.read(0, 4096):         # the parent writes nothing: only the end matters
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    threading.Thread(target=_watch_parent, name="usagi-parent-watch", daemon=True).start()
    from ..cli.server import main as server_main
    return server_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
