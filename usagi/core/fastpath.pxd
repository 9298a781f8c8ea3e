# C declarations for compiling fastpath.py with Cython (setup.py); Python never reads this file.
# The hot-path state of connections and channels as C fields: the compiled hot path reads them
# without a dictionary lookup, and Python code elsewhere reads and writes them as attributes.

cdef class ConnectionState:
    cdef public object reader, broker, channels, state, holder, closed, throttled, yielded, turn_start
    cdef public object publishing, out, out_size, out_limit, writable, frame_max

cdef class ChannelState:
    cdef public object conn, broker, vhost, number, state, content_expected, body_expected, held
    cdef public object pub_memo, tx, tx_publishes, tx_acks, confirm, publish_seq, acks_ready
    cdef public object nacks_ready, waiting, confirm_dirty, unacked, next_tag, flow_active
    cdef public object global_prefetch, published, delivered
