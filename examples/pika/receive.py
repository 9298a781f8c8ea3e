#!/usr/bin/env python3
"""Print every message that arrives on the 'hello' queue until interrupted.

The broker URL comes from AMQP_URL (default amqp://guest:guest@localhost:5672/%2F).
"""
import os
import sys

import pika

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/%2F")


def on_message(channel, method, properties, body):
    print(f" [x] Received {body!r}", flush=True)


def main():
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    channel.queue_declare(queue="hello")
    channel.basic_consume(queue="hello", on_message_callback=on_message, auto_ack=True)

    print(" [*] Waiting for messages. To exit press CTRL+C", flush=True)
    try:
        channel.start_consuming()
    except KeyboardInterrupt:
        channel.stop_consuming()
    finally:
        if connection.is_open:
            connection.close()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
