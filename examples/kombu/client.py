#!/usr/bin/env python3
"""Send a hello_task message to the worker.

    python client.py                    # hello_task() on the 'hipri' queue
    python client.py Alice --priority lopri

The broker URL comes from AMQP_URL (default amqp://guest:guest@localhost:5672/%2F).
"""
import argparse
import os

from kombu import Connection
from kombu.pools import producers

from queues import PRIORITIES, task_exchange, task_queues
from tasks import hello_task

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def send_as_task(connection, fun, args=(), kwargs=None, priority="hipri"):
    """Publish a message asking the worker to call `fun(*args, **kwargs)`."""
    payload = {"fun": fun.__name__, "args": list(args), "kwargs": kwargs or {}}
    with producers[connection].acquire(block=True) as producer:
        producer.publish(payload,
                         exchange=task_exchange,
                         routing_key=priority,
                         serializer="pickle",
                         compression="bzip2",
                         declare=task_queues,
                         retry=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("who", nargs="?", help="whom hello_task greets (default: world)")
    parser.add_argument("--priority", choices=PRIORITIES, default="hipri",
                        help="queue to send the task to (default: hipri)")
    options = parser.parse_args()

    args = [options.who] if options.who is not None else []
    with Connection(AMQP_URL) as connection:
        send_as_task(connection, hello_task, args=args, priority=options.priority)
    print(f" [x] Sent hello_task({', '.join(map(repr, args))}) to {options.priority}", flush=True)


if __name__ == "__main__":
    main()
