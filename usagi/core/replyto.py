"""Direct reply-to: the amq.rabbitmq.reply-to pseudo queue, consumed with no-ack, and the reply
addresses that route straight to the requester's channel.

Methods of Channel (core/channel.py), split out by concern.
"""
from __future__ import annotations

import logging

from ..amqp import errors as E
from ..amqp import methods as M
from ..amqp import properties as P
from ..amqp.errors import ChannelError, ConnectionError_
from ..model.queue import Consumer, Queue
from ..model.util import gen_name
from .channel_common import (OPEN, _DELIVER_HEAD, _shortstr)


log = logging.getLogger("usagi.channel")


class ReplyToMixin:
    # ------------------------------------------------------------------ direct reply-to
    def _consume_reply_to(self, m):
        if not m.no_ack:
            raise ChannelError("reply consumer cannot acknowledge", E.PRECONDITION_FAILED)
        if self.reply_queue is not None:
            raise ChannelError("reply consumer already set", E.PRECONDITION_FAILED)
        tag = m.consumer_tag or gen_name("amq.ctag-")
        if tag in self.consumers:
            raise ConnectionError_(f"attempt to reuse consumer tag '{tag}'", E.NOT_ALLOWED)
        q = Queue(self.vhost.name, "amq.rabbitmq.reply-to", False, None, False, {})
        c = Consumer(tag, self, q, True, False, 0, m.arguments)
        c.prefix = _DELIVER_HEAD + _shortstr(tag)
        q.add_consumer(c)
        self.consumers[tag] = c
        self.reply_queue = q
        self.reply_token = gen_name("")
        self.broker.reply_to[self.reply_token] = self
        if not m.nowait:
            self.reply(M.BasicConsumeOk(tag))

    def _drop_reply_consumer(self):
        if self.reply_token is not None:
            self.broker.reply_to.pop(self.reply_token, None)
        self.reply_queue = None
        self.reply_token = None

    def _reply_to_props(self, props: bytes, scan) -> bytes:
        if self.reply_queue is None:
            raise ChannelError("fast reply consumer does not exist", E.PRECONDITION_FAILED)
        d = P.decode(props)
        d["reply_to"] = "amq.rabbitmq.reply-to." + self.reply_token
        raw_headers = props[scan.headers_span[0]:scan.headers_span[1]] if scan.headers_span else None
        return P.encode(d, raw_headers=raw_headers)

    def _reply_route(self, msg) -> list:
        """Publishing to amq.rabbitmq.reply-to.TOKEN delivers straight to the requester's channel."""
        token = msg.routing_key[len("amq.rabbitmq.reply-to."):]
        ch = self.broker.reply_to.get(token)
        if ch is None or ch.reply_queue is None or ch.state != OPEN:
            return []
        q = ch.reply_queue
        c = next(iter(q.consumers))
        ch.deliver(c, q, q.next_seq(), msg, False)
        return [None]
