# C declarations for compiling hotstate.py with Cython (setup.py); Python never reads this file.
# Each field is one the compiled hot path (core/fastpath.py) reads or writes for every message;
# a message's `_headers` and `bcc` too, so that its (compiled) constructor writes C fields only.

cdef class MessageState:
    cdef public object exchange, routing_key, props, body, scan, id, refs, stored, route, confirm
    cdef public object _headers, bcc

cdef class QueueState:
    cdef public object consumers, returned, paged, seq, published, delivered, delivered_auto, acked
    cdef public object unacked, held_expiry, delivery_counts, durable, simple, consumer_priorities
    cdef public object ring, deleted, dead, expiry, ready_bytes, cap_count, cap_bytes

cdef class ConsumerState:
    cdef public object channel, no_ack, prefetch, unacked, prefix, parked

cdef class ExchangeState:
    cdef public object publish_in, publish_out, deleted, returned, dropped
