#!/usr/bin/env python3
"""Consume task messages from the 'hipri', 'midpri' and 'lopri' queues and run them.

A task message is a mapping {"fun": name, "args": [...], "kwargs": {...}}; `name`
must be a function defined in tasks.py. Messages are accepted as pickle or JSON.

The broker URL comes from AMQP_URL (default amqp://guest:guest@localhost:5672/%2F).
"""
import os
import sys

from kombu import Connection
from kombu.mixins import ConsumerMixin

import tasks
from queues import task_queues

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def log(text):
    print(text, flush=True)


def find_task(name):
    """Return the function called `name` in tasks.py, or None."""
    if not isinstance(name, str) or name.startswith("_"):
        return None
    fun = getattr(tasks, name, None)
    return fun if callable(fun) else None


class Worker(ConsumerMixin):
    def __init__(self, connection):
        self.connection = connection

    def get_consumers(self, Consumer, channel):
        return [Consumer(queues=task_queues, accept=["pickle", "json"],
                         callbacks=[self.process_task], prefetch_count=10)]

    def on_consume_ready(self, connection, channel, consumers, **kwargs):
        names = ", ".join(q.name for q in task_queues)
        log(f" [*] Waiting for tasks on {names}. To exit press CTRL+C")

    def process_task(self, body, message):
        if not isinstance(body, dict):
            log(f" [!] Not a task message: {body!r}, dropping it")
            message.reject()
            return
        name = body.get("fun")
        args = body.get("args") or ()
        kwargs = body.get("kwargs") or {}
        fun = find_task(name)
        if fun is None:
            log(f" [!] Unknown task {name!r}, dropping the message")
            message.reject()
            return
        call = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        log(f" [x] Running {name}({call})")
        try:
            fun(*args, **kwargs)
        except Exception as exc:
            log(f" [!] {name} failed: {exc!r}")
        finally:
            sys.stdout.flush()
        message.ack()


def main():
    with Connection(AMQP_URL) as connection:
        try:
            Worker(connection).run()
        except KeyboardInterrupt:
            log(" [*] Bye")


if __name__ == "__main__":
    main()
