"""Publish persistent messages with confirms, many in flight; print each confirmed id as it arrives.

    python confirm_publisher.py URL QUEUE FIRST_ID COUNT

Bodies are the decimal ids. Output: one "C <id>" line per confirmed message, "N <id>" per nack.
Used by the crash tests: the broker is killed while this runs.
"""
import asyncio
import sys

import aio_pika


async def main(url, queue, first, count, window=256):
    conn = await aio_pika.connect(url)
    ch = await conn.channel(publisher_confirms=True)
    await ch.declare_queue(queue, durable=True)
    out = sys.stdout

    async def one(i):
        msg = aio_pika.Message(str(i).encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            await ch.default_exchange.publish(msg, routing_key=queue)
        except aio_pika.exceptions.DeliveryError:
            out.write(f"N {i}\n")
            return
        out.write(f"C {i}\n")

    pending = set()
    for i in range(first, first + count):
        pending.add(asyncio.ensure_future(one(i)))
        if len(pending) >= window:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for d in done:
                d.result()
            out.flush()
    await asyncio.gather(*pending)
    out.flush()
    await conn.close()


if __name__ == "__main__":
    url, queue, first, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    sys.stdout.reconfigure(line_buffering=True)
    try:
        asyncio.run(main(url, queue, first, count))
    except Exception as e:  # the broker was killed: what was confirmed is already printed
        sys.stdout.flush()
        print(f"publisher stopped: {e!r}", file=sys.stderr)
        sys.exit(3)
