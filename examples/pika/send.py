#!/usr/bin/env python3
"""Publish one 'Hello World!' message to the 'hello' queue.

The broker URL comes from AMQP_URL (default amqp://guest:guest@localhost:5672/%2F).
"""
import os

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def main():
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.queue_declare(queue="hello")
        body = "Hello World!"
        channel.basic_publish(exchange="", routing_key="hello", body=body.encode())
        print(f" [x] Sent {body!r}", flush=True)
    finally:
        connection.close()


if __name__ == "__main__":
    main()
