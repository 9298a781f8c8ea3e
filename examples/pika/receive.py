#!/usr/bin/env python3
"""Print every message that arrives on the 'hello' queue until interrupted.

The broker URL comes from AMQP_URL (default amqp://guest:guest@localhost:5672/%2F).
"""
import os

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
    channel.start_consuming()


if __name__ == "__main__":
    # Ctrl+C can land anywhere inside pika's I/O, where a clean close may wait for ever: exit at
    # once instead (the broker sees the connection drop and cancels the consumer).
    try:
        main()
    except KeyboardInterrupt:
        os._exit(0)
