# C declarations for compiling fastpath.py with Cython (setup.py); Python never reads this file.
# The hot-path state of connections, channels and the engine as C fields: the compiled hot path
# reads them without a dictionary lookup, and Python code elsewhere reads and writes them as
# attributes. Those of messages, queues and consumers are the model's (model/hotstate.pxd).

from usagi.model._hotstate cimport MessageState, QueueState, ConsumerState, ExchangeState

cdef class ConnectionState:
    cdef public object reader, broker, channels, state, holder, closed, throttled, yielded, turn_start
    cdef public object publishing, out, out_size, out_limit, writable, frame_max

cdef class ChannelState:
    cdef public object conn, broker, vhost, number, state, content_expected, body_expected, held
    cdef public object pub_memo, tx, tx_publishes, tx_acks, confirm, publish_seq, acks_ready
    cdef public object nacks_ready, waiting, confirm_dirty, unacked, next_tag, flow_active
    cdef public object global_prefetch, published, delivered, acked, delivered_auto, redelivered, _sizes
    cdef public object waited_epoch

cdef class BrokerState:
    cdef public object config, store, users, stats, next_msg_id, staged, staged_count, dirty
    cdef public object flow_waits, pressure, commit_epoch

cdef class Unacked:
    cdef public object tag, queue, seq, msg, consumer

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy


cdef inline void _put32(unsigned char* p, unsigned long long v) noexcept:
    p[0] = (v >> 24) & 255
    p[1] = (v >> 16) & 255
    p[2] = (v >> 8) & 255
    p[3] = v & 255


cdef inline object _deliver_frames(object num, object prefix, object tag, object redelivered,
                                   object route, object props, object body):
    """deliver()'s frames, written straight into one bytes object (the join of the pure-Python
    code, without the packing calls); None for arguments of another type (the caller joins)."""
    if type(prefix) is not bytes or type(route) is not bytes or type(props) is not bytes \
            or type(body) is not bytes or type(tag) is not int or type(num) is not int:
        return None
    cdef unsigned int n = num
    cdef unsigned long long t = tag
    cdef Py_ssize_t pl = PyBytes_GET_SIZE(prefix), rl = PyBytes_GET_SIZE(route)
    cdef Py_ssize_t hl = PyBytes_GET_SIZE(props), bl = PyBytes_GET_SIZE(body)
    cdef Py_ssize_t ml = pl + 9 + rl
    out = PyBytes_FromStringAndSize(NULL, 7 + ml + 1 + 7 + 12 + hl + 1 + 7 + bl + 1)
    cdef unsigned char* p = <unsigned char*> PyBytes_AS_STRING(out)
    p[0] = 1
    p[1] = (n >> 8) & 255
    p[2] = n & 255
    _put32(p + 3, ml)
    p += 7
    memcpy(p, PyBytes_AS_STRING(prefix), pl)
    p += pl
    _put32(p, t >> 32)
    _put32(p + 4, t & 0xFFFFFFFF)
    p[8] = 1 if redelivered else 0
    p += 9
    memcpy(p, PyBytes_AS_STRING(route), rl)
    p += rl
    p[0] = 206
    p[1] = 2
    p[2] = (n >> 8) & 255
    p[3] = n & 255
    _put32(p + 4, 12 + hl)
    p[8] = 0
    p[9] = 60
    p[10] = 0
    p[11] = 0
    _put32(p + 12, (<unsigned long long> bl) >> 32)
    _put32(p + 16, bl & 0xFFFFFFFF)
    p += 20
    memcpy(p, PyBytes_AS_STRING(props), hl)
    p += hl
    p[0] = 206
    p[1] = 3
    p[2] = (n >> 8) & 255
    p[3] = n & 255
    _put32(p + 4, bl)
    p += 8
    memcpy(p, PyBytes_AS_STRING(body), bl)
    p[bl] = 206
    return out
