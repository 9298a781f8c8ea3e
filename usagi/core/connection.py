"""One AMQP connection: handshake, channel 0, frame dispatch and content assembly.

Sans-IO: bytes come in through `data_received`; bytes go out through `self.transport.write`,
collected in `self.out` and written once per loop turn by `flush`. The transport is anything with
write(), close(), pause_reading(), resume_reading() and get_write_buffer_size().
"""
from __future__ import annotations

import itertools
import logging
import struct
import time
from time import perf_counter

from ..amqp import errors as E
from ..amqp import erlfmt
from ..amqp import methods as M
from ..amqp.errors import AMQPError, ConnectionError_, FrameError
from ..amqp.frames import (FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_MIN_SIZE,
                           HEARTBEAT_FRAME, PROTOCOL_HEADER, BadProtocolHeader, FrameReader,
                           method_frame)
from ..auth import sasl, x509
from . import access, limits
from .channel import Channel
from .fastpath import TURN_SECONDS
from .hot import fastpath

log = logging.getLogger("usagi.connection")

_HH = struct.Struct(">HH")
_ids = itertools.count(1)

# states
AWAIT_HEADER, AWAIT_START_OK, AWAIT_SECURE_OK, AWAIT_TUNE_OK, AWAIT_OPEN, OPEN, CLOSING, CLOSED = range(8)
assert OPEN == fastpath.OPEN
_STATE_NAMES = {AWAIT_HEADER: "starting", AWAIT_START_OK: "starting", AWAIT_SECURE_OK: "securing",
                AWAIT_TUNE_OK: "tuning", AWAIT_OPEN: "opening", OPEN: "running", CLOSING: "closing",
                CLOSED: "closed"}


# The store's commits run in a worker thread that needs the GIL back after each SQL statement. The
# event loop (uvloop) gives the GIL up and takes it back between every two callbacks, which is too
# quick for a waiting thread to get in: under load a commit then waited up to seconds for it (and
# what it had not written yet stayed in memory meanwhile). So a connection whose input handling
# ends while a commit has been writing for more than STORE_STALLED seconds lets the GIL go for
# STORE_TURN seconds. Measured (c16, 140k msg/s): the longest commit went from 1.8 s to 0.34 s,
# the median from 12 ms to 10 ms, memory after the run from 107 to 56 MB, throughput unchanged.
STORE_STALLED = 0.0005
STORE_TURN = 0.0002


class Connection(fastpath.ConnectionState):
    def __init__(self, broker, transport, peer=("?", 0), local=("?", 0), tls=None):
        self.broker = broker
        self.transport = transport
        self.peer = peer
        self.local = local
        self.tls = tls
        self.id = next(_ids)
        self.name = f"{peer[0]}:{peer[1]} -> {local[0]}:{local[1]}"
        self.reader = FrameReader(frame_max=FRAME_MIN_SIZE * 2)
        self.state = AWAIT_HEADER
        self.out: list = []
        self.out_size = 0             # bytes of deliveries buffered since the last flush
        self.out_limit = broker.config.write_high_water
        self.writable = True
        self.reading_paused = False
        self.channels: dict[int, Channel] = {}
        self.channel_max = broker.config.channel_max
        self.frame_max = broker.config.frame_max
        self.heartbeat = 0
        self.client_properties: dict = {}
        self.capabilities: dict = {}
        self.user = None
        self.vhost: str | None = None
        self.vhost_obj = None
        self.auth_mechanism = ""
        self.exclusive_queues: list = []
        self.connected_at = time.time()
        self.last_recv = time.monotonic()
        self.last_send = time.monotonic()
        self.recv_oct = 0
        self.send_oct = 0
        self.recv_cnt = 0
        self.send_cnt = 0
        self.blocked = False          # connection.blocked sent
        self.publishing = False       # published in this turn: an alarm stops reading from it
        self.alarm_paused = False
        self.flow_paused = False      # waits for the consumers of a queue it publishes to (core/flow.py)
        self.yielded = False          # input left for the next turn (fairness budget)
        self.input_paused = False
        self.throttled = False        # publishing into a backlog: take smaller turns
        self.holder = None            # the channel whose reply waits for a store commit: no input
        #                               is handled until it is sent (Channel.reply_after_commit)
        self.held_frames = None       # frames read before that reply (or before the turn's time ran
        #                               out), handled after it
        self.turn_start = 0.0         # when this turn's input handling began (perf_counter)
        self.closed = False
        self.close_reason = None
        self.end_reason = None        # why it ends, for the log line when it does (see _log_end)
        self.end_level = logging.INFO
        self.consumer_tags = itertools.count(1)
        self.on_closed = None         # set by the server layer

    # ------------------------------------------------------------------ output
    def write(self, data: bytes):
        if self.closed:
            return
        if not self.out:
            self.broker.want_flush(self)
        self.out.append(data)

    def write_parts(self, parts):
        if self.closed:
            return
        if not self.out:
            self.broker.want_flush(self)
        self.out += parts

    def send_method(self, channel: int, method):
        self.write(method_frame(channel, method.encode()))

    def flush(self):
        out = self.out
        if not out or self.closed:
            self.out = []
            return
        self.out = []
        data = b"".join(out)
        self.send_oct += len(data)
        self.send_cnt += 1
        self.last_send = time.monotonic()
        self.transport.write(data)
        if self.out_size > self.out_limit:
            # deliveries stopped for this turn because the batch was full: resume them
            self.out_size = 0
            if self.writable:
                for ch in self.channels.values():
                    ch.kick()
                self.broker.run_dirty()
        else:
            self.out_size = 0

    # called by the transport's flow control
    def pause_writing(self):
        self.writable = False

    def resume_writing(self):
        self.writable = True
        if self.reading_paused:
            self.reading_paused = False
            if not self.input_paused and not self.alarm_paused and not self.flow_paused:
                self.transport.resume_reading()
        for ch in self.channels.values():
            ch.kick()
        self.broker.run_dirty()

    # ------------------------------------------------------------------ input
    def connection_made(self):
        self.broker.connection_opened(self)

    def data_received(self, data: bytes, counted: bool = False):
        if self.closed:
            return
        if not counted:
            self.last_recv = time.monotonic()
            self.recv_oct += len(data)
            self.recv_cnt += 1
        reader = self.reader
        if reader.error is not None:
            # the stream broke and the connection is closing: what follows is discarded (re-raising
            # the stored error would chain a traceback, and with it this data, per call: a leak)
            return
        if self.holder is not None:
            # a reply waits for the store (reading is paused): keep what still arrives for later
            if data:
                reader._buf = reader._buf + data
            return
        self.turn_start = perf_counter()
        self.publishing = False
        broker = self.broker
        broker.pressure = None
        try:
            if self.held_frames is not None:
                # frames read before (a reply that waited for the store, or the end of the last
                # turn's time): they come first
                frames, self.held_frames = self.held_frames, None
                self.handle_frames(frames)
                if self.holder is not None or self.yielded:
                    if data:
                        reader._buf = reader._buf + data
                    if self.yielded:
                        self._yield_turn()
                    self._alarm_check()
                    return
            if self.state == OPEN and reader.error is None and self.fast_path:
                data = self._fast(data)
                if self.yielded or self.holder is not None:
                    reader._buf = data
                    data = None
                    if not self.input_paused:
                        self.input_paused = True
                        self.transport.pause_reading()
                    if self.yielded:
                        self.broker.defer(self._continue_input)
            frames = reader.feed(data) if data else None
            if frames:
                self.handle_frames(frames)
                if self.yielded and self.held_frames is not None:
                    self._yield_turn()
            if reader.error is not None:
                err = reader.error
                if isinstance(err, BadProtocolHeader):
                    self._bad_header(err)
                else:
                    raise err
        except AMQPError as e:
            self.connection_error(e)
        except Exception:
            # a bug in the broker, not the client's fault: say so, close this connection only
            log.exception("connection %s: internal error while handling input", self.name)
            self.connection_error(ConnectionError_("internal error", E.INTERNAL_ERROR))
        finally:
            self.broker.run_dirty()
            for ch in self.channels.values():
                if ch.confirm_dirty:
                    ch.send_confirms()
            if self.broker.early_confirms:
                self.broker.send_early_confirms()
            since = self.broker.store.writing_since
            if since is not None and time.perf_counter() - since > STORE_STALLED:
                time.sleep(STORE_TURN)
        if broker.pressure is not None:
            q, broker.pressure = broker.pressure, None
            if self.publishing and not self.closed and not self.flow_paused:
                broker.flow_start(self, q)
        self._alarm_check()
        if self.writable is False and not self.reading_paused and \
                self.transport.get_write_buffer_size() > self.broker.config.write_hard_limit:
            self.reading_paused = True
            self.transport.pause_reading()

    def _alarm_check(self):
        """At the end of a turn: a publish in it (a publish method, or content frames of one begun
        before) while a resource alarm is on stops reading from this open connection until the
        alarm clears, and says so (connection.blocked), as RabbitMQ does. A connection that does
        not publish meanwhile (a consumer acking) is read as before and told nothing; a closing
        one is still read (its close-ok)."""
        if self.publishing and self.broker.alarms and not self.alarm_paused and self.state == OPEN \
                and not self.closed:
            self.alarm_paused = True
            self.transport.pause_reading()
            self.set_blocked(True, self.broker.alarm_reason())

    def _yield_turn(self):
        """This turn's time is spent with input left: stop reading and go on in a later turn."""
        if not self.input_paused:
            self.input_paused = True
            self.transport.pause_reading()
        self.broker.defer(self._continue_input)

    def _continue_input(self):
        """Go on with input left over when the last turn's budget ran out, or after a reply that
        waited for the store."""
        self.yielded = False
        if self.closed or self.holder is not None:
            return
        self.data_received(b"", counted=True)
        if not self.yielded and self.holder is None and self.input_paused:
            self.input_paused = False
            if not self.closed and not self.reading_paused and not self.alarm_paused and not self.flow_paused:
                self.transport.resume_reading()

    def flow_pause(self):
        """Stop reading until the consumers of a queue this connection publishes to catch up."""
        if not self.flow_paused:
            self.flow_paused = True
            self.transport.pause_reading()

    def flow_resume(self):
        if self.flow_paused:
            self.flow_paused = False
            if not self.closed and not self.reading_paused and not self.alarm_paused and not self.input_paused:
                self.transport.resume_reading()

    def hold_input(self, channel):
        """`channel` holds a reply until the store commits: handle no more input until then (the
        bytes and frames not yet handled are kept), so that nothing overtakes it."""
        self.holder = channel
        if not self.input_paused:
            self.input_paused = True
            self.transport.pause_reading()

    def input_released(self, channel):
        """The held reply of `channel` is sent: go on with the input, on a later turn."""
        if self.holder is channel:
            self.holder = None
            self.broker.defer(self._continue_input)

    def _hold_rest(self, frames, payload):
        """A reply now waits for the store: keep the frames after the one (`payload`) that asked for it."""
        for i, f in enumerate(frames):
            if f[2] is payload:
                rest = list(frames[i + 1:])
                if rest:
                    self.held_frames = rest + (self.held_frames or [])
                return

    # The hot path (core/fastpath.py, compiled when it could be): frames parsed in place, and a
    # publish whose header and body frames came in the same read handled in one go. Anything
    # unusual is left to the general reader: the bytes not consumed are returned.
    _fast = fastpath.fast_input
    fast_path = True              # False: every frame goes through the reader and handle_frames

    def handle_frames(self, frames):
        channels = self.channels
        for i, (ftype, chnum, payload) in enumerate(frames):
            if i and perf_counter() - self.turn_start > TURN_SECONDS:
                # this turn's time is spent: the rest waits for a later turn, in order
                self.held_frames = list(frames[i:]) + (self.held_frames or [])
                self.yielded = True
                return
            if self.state == CLOSING:
                self._closing_frame(ftype, chnum, payload)
                continue
            if self.closed:
                return
            if ftype == FRAME_METHOD:
                ch = channels.get(chnum) if chnum else None
                if ch is not None and (ch.content_expected or ch.body_expected):
                    what = "header for class 60" if ch.content_expected else "body"
                    raise ConnectionError_(
                        f"expected content {what}, got non content {what.split()[0]} frame instead",
                        E.UNEXPECTED_FRAME, 60, 40)
                cid, mid = _HH.unpack_from(payload, 0)
                index = (cid << 16) | mid
                if index == 0x3C0028 and ch is not None:   # basic.publish, the hot path
                    ch.on_publish(payload)
                    continue
                cls = M.METHODS.get(index)
                if cls is None:
                    # RabbitMQ cannot look the method up and drops the connection without a frame
                    self.note_end(f"unknown method class {cid} method {mid}", logging.WARNING)
                    self.finish_close()
                    return
                try:
                    method = cls.decode(payload, 4, len(payload))
                except FrameError as e:     # RabbitMQ's own text (a name not in UTF-8), no method named
                    raise ConnectionError_(e.text, E.FRAME_ERROR) from None
                except AMQPError:
                    raise ConnectionError_(f"cannot decode {erlfmt.binary(payload[4:])}", E.FRAME_ERROR,
                                           cid, mid) from None
                if chnum == 0:
                    self.handle_connection_method(method)
                else:
                    self.handle_channel_method(chnum, method)
                    if self.holder is not None:
                        self._hold_rest(frames, payload)
                        return
            elif ftype == FRAME_HEADER or ftype == FRAME_BODY:
                if chnum == 0:
                    raise ConnectionError_(erlfmt.frame_octets(ftype, payload), E.UNEXPECTED_FRAME)
                ch = channels.get(chnum)
                if ch is not None and ch.state:   # closing: discard until close-ok
                    continue
                if ftype == FRAME_HEADER:
                    if ch is None or not ch.content_expected:
                        self._unexpected(chnum, "content header")
                    ch.on_header(payload)
                else:
                    if ch is None or not ch.body_expected:
                        self._unexpected(chnum, "content body")
                    ch.on_body(payload)
            elif ftype == FRAME_HEARTBEAT:
                if chnum != 0:
                    raise ConnectionError_(erlfmt.frame_octets(ftype, payload), E.UNEXPECTED_FRAME)
            elif ftype == "header":
                self._send_start()

    def _unexpected(self, chnum, what):
        ch = self.channels.get(chnum)
        if ch is None:
            raise ConnectionError_("expected 'channel.open'", E.CHANNEL_ERROR)
        if what == "content header" and ch.body_expected:
            raise ConnectionError_("expected content body, got non content body frame instead",
                                   E.UNEXPECTED_FRAME, 60, 40)
        raise ConnectionError_("expected method frame, got non method frame instead", E.UNEXPECTED_FRAME)

    def _closing_frame(self, ftype, chnum, payload):
        """After we sent connection.close, only close-ok (or the peer's own close) matters."""
        if ftype != FRAME_METHOD or chnum != 0 or len(payload) < 4:
            return
        cid, mid = _HH.unpack_from(payload, 0)
        if (cid, mid) == (10, 51):
            self.finish_close()
        elif (cid, mid) == (10, 50):
            self.send_method(0, M.ConnectionCloseOk())
            self.flush()
            self.finish_close()

    def _bad_header(self, err: BadProtocolHeader):
        self.note_end(f"client did not start with AMQP protocol header: {err.received!r}; replied with ours")
        self.transport.write(PROTOCOL_HEADER)
        self.finish_close()

    # ------------------------------------------------------------------ connection class
    def _send_start(self):
        log.info("accepting AMQP connection %s", self.name)
        mechanisms = " ".join(self.broker.sasl_mechanisms(self)) if hasattr(self.broker, "sasl_mechanisms") \
            else " ".join(sasl.MECHANISMS)
        self.send_method(0, M.ConnectionStart(0, 9, self.broker.server_properties, mechanisms.encode(),
                                              b"en_US"))
        self.state = AWAIT_START_OK

    def handle_connection_method(self, m):
        idx = m.INDEX
        st = self.state
        if idx == M.ConnectionStartOk.INDEX and st == AWAIT_START_OK:
            return self._start_ok(m)
        if idx == M.ConnectionTuneOk.INDEX and st == AWAIT_TUNE_OK:
            return self._tune_ok(m)
        if idx == M.ConnectionOpen.INDEX and st == AWAIT_OPEN:
            return self._open(m)
        if idx == M.ConnectionClose.INDEX:
            self.note_end(f"closed by the client: {m.reply_code} {m.reply_text!r}")   # repr: one log line
            self.send_method(0, M.ConnectionCloseOk())
            self.flush()
            return self.finish_close()
        if idx == M.ConnectionCloseOk.INDEX:
            return self.finish_close()
        if idx == M.ConnectionUpdateSecret.INDEX and st == OPEN:
            return self._update_secret(m)
        if st == OPEN:
            raise ConnectionError_("unexpected method in connection state running",
                                   E.CHANNEL_ERROR, m.CLASS_ID, m.METHOD_ID)
        raise ConnectionError_(f"expected {self._expected()} but got {m.NAME}",
                               E.COMMAND_INVALID, m.CLASS_ID, m.METHOD_ID)

    def _expected(self):
        return {AWAIT_START_OK: "'connection.start_ok'", AWAIT_TUNE_OK: "'connection.tune_ok'",
                AWAIT_OPEN: "'connection.open'"}.get(self.state, "'connection.close_ok'")

    def _start_ok(self, m):
        self.client_properties = m.client_properties or {}
        caps = self.client_properties.get("capabilities")
        self.capabilities = caps if isinstance(caps, dict) else {}
        mech = m.mechanism
        self.auth_mechanism = mech
        offered = self.broker.sasl_mechanisms(self) if hasattr(self.broker, "sasl_mechanisms") else sasl.MECHANISMS
        if mech not in offered:
            raise ConnectionError_(f"unknown authentication mechanism '{mech}'", E.COMMAND_INVALID,
                                   10, 11)
        if mech == "EXTERNAL":
            username, why = x509.login_name(self.tls, self.broker.config)
            if username is None:
                log.warning("connection %s: EXTERNAL login refused: %s", self.name, why)
                return self._refuse_login(mech, "")
            user = self.broker.users.users.get(username)
        else:
            try:
                username, password = sasl.parse_response(mech, m.response)
            except sasl.SaslError as e:
                log.warning("connection %s: bad %s response: %s", self.name, mech, e)
                return self._refuse_login(mech, "")
            user = self.broker.users.authenticate(username, password)
        if user is None:
            log.warning("connection %s: user '%s' failed to authenticate with %s", self.name, username, mech)
            return self._refuse_login(mech, username)
        if username in self.broker.config.loopback_users and not _is_loopback(self.peer[0]):
            log.warning("connection %s: user '%s' can only connect via localhost", self.name, username)
            # RabbitMQ's auth_fail: the reason goes to the log, the client gets the generic text
            return self._refuse_login(mech, username)
        self.broker.counters.login("amqp091", True)     # rabbitmq_auth_attempts_* (failures: below)
        self.user = user
        c = self.broker.config
        self.send_method(0, M.ConnectionTune(c.channel_max, c.frame_max, c.heartbeat))
        self.state = AWAIT_TUNE_OK

    def _refuse_login(self, mech, username, text=None):
        self.broker.counters.login("amqp091", False)
        if not limits.login_admit(self):
            # failed logins from this address are still waiting for their answer: this guess is
            # dropped unanswered (correct logins from the address are never held up)
            return self.finish_close()
        if limits.login_failed(self, lambda: self._refuse_later(mech, text)):
            # repeated failures from one address are answered later and later (limits.login_failed)
            self.state = AWAIT_SECURE_OK
            return
        self._refuse_now(mech, text)

    def _refuse_later(self, mech, text):
        if not self.closed and self.state == AWAIT_SECURE_OK:
            self._refuse_now(mech, text)
            self.broker.flush_output()

    def _refuse_now(self, mech, text=None):
        text = text or (f"Login was refused using authentication mechanism {mech}. "
                        f"For details see the broker logfile.")
        err = ConnectionError_(text, E.ACCESS_REFUSED)
        err.send_anyway = True
        self.note_end(f"during the handshake: {err.reply_text}")
        if self.capabilities.get("authentication_failure_close"):
            self.connection_error(err)
        else:
            self.finish_close()

    def _tune_ok(self, m):
        c = self.broker.config
        self._negotiate("channel_max", m.channel_max, c.channel_max, 0)
        self._negotiate("frame_max", m.frame_max, c.frame_max, FRAME_MIN_SIZE)
        self.channel_max = m.channel_max or c.channel_max
        self.frame_max = m.frame_max or c.frame_max
        self.heartbeat = m.heartbeat
        self.reader.frame_max = self.frame_max
        self.state = AWAIT_OPEN

    @staticmethod
    def _negotiate(field, client, server, minimum):
        if client != 0 and client < minimum:
            raise ConnectionError_(f"negotiated {field} = {client} is lower than the minimum allowed "
                                   f"value ({minimum})", E.NOT_ALLOWED, 10, 30)
        if server != 0 and (client == 0 or client > server):
            detail = " (no limit)" if client == 0 else ""
            raise ConnectionError_(f"negotiated {field} = {client}{detail} is higher than the maximum "
                                   f"allowed value ({server})", E.NOT_ALLOWED, 10, 30)

    def _open(self, m):
        name = m.virtual_host
        v = self.broker.vhosts.get(name)
        if v is None:
            raise ConnectionError_(f"vhost {name} not found", E.NOT_ALLOWED, 10, 40)
        limits.check_connection_open(self, name)
        if not access.vhost_access(self.broker, self.user, name):
            raise ConnectionError_(f"access to vhost '{name}' refused for user '{self.user.name}'",
                                   E.NOT_ALLOWED, 10, 40)
        self.vhost = name
        self.vhost_obj = v
        self.state = OPEN
        self.send_method(0, M.ConnectionOpenOk(""))
        log.info("connection %s: user '%s' authenticated and granted access to vhost '%s'",
                 self.name, self.user.name, name)

    def _update_secret(self, m):
        # The internal user database, like RabbitMQ's, keeps the identity established at login:
        # the new secret is accepted and the session goes on (token backends would re-check it here).
        log.info("connection %s: secret updated (%s)", self.name, m.reason)
        self.send_method(0, M.ConnectionUpdateSecretOk())

    def alarm_cleared(self):
        self.set_blocked(False)
        if self.alarm_paused:
            self.alarm_paused = False
            if not self.closed and not self.reading_paused and not self.input_paused and not self.flow_paused:
                self.transport.resume_reading()

    def set_blocked(self, blocked: bool, reason: str = "low on memory"):
        if not self.capabilities.get("connection.blocked") or self.state != OPEN:
            return
        if blocked and not self.blocked:
            self.blocked = True
            self.send_method(0, M.ConnectionBlocked(reason))
        elif not blocked and self.blocked:
            self.blocked = False
            self.send_method(0, M.ConnectionUnblocked())

    # ------------------------------------------------------------------ channels
    def handle_channel_method(self, chnum: int, m):
        if self.state != OPEN:
            raise ConnectionError_(f"expected {self._expected()}", E.COMMAND_INVALID, m.CLASS_ID, m.METHOD_ID)
        ch = self.channels.get(chnum)
        if m.INDEX == M.ChannelOpen.INDEX:
            if ch is not None:
                raise ConnectionError_("second 'channel.open' seen", E.CHANNEL_ERROR, 20, 10)
            if self.channel_max and len(self.channels) >= self.channel_max:
                raise ConnectionError_(f"number of channels opened ({len(self.channels)}) has reached the "
                                       f"negotiated channel_max ({self.channel_max})", E.NOT_ALLOWED)
            limits.check_channel_open(self)
            ch = self.channels[chnum] = Channel(self, chnum)
            self.send_method(chnum, M.ChannelOpenOk())
            return
        if ch is None:
            raise ConnectionError_("expected 'channel.open'", E.CHANNEL_ERROR, m.CLASS_ID, m.METHOD_ID)
        ch.handle(m)

    def channel_closed(self, ch):
        if self.channels.get(ch.number) is ch:
            del self.channels[ch.number]

    # ------------------------------------------------------------------ closing
    def connection_error(self, e: AMQPError):
        if self.closed or self.state == CLOSING:
            return
        if self.state in (AWAIT_HEADER, AWAIT_START_OK, AWAIT_SECURE_OK, AWAIT_TUNE_OK) and not e.send_anyway:
            # before the connection is open RabbitMQ sends no close frame: it drops the socket
            self.note_end(f"during the handshake: {e.reply_text}")
            self.finish_close()
            return
        level = logging.INFO if e.code in (E.ACCESS_REFUSED, E.NOT_ALLOWED) else logging.WARNING
        self.note_end(e.reply_text, level)
        self.close_reason = e.reply_text
        self.send_method(0, M.ConnectionClose(e.code, e.reply_text, e.class_id, e.method_id))
        self.state = CLOSING
        self.flush()
        self._release()
        if self.on_closing is not None:
            self.on_closing()

    on_closing = None   # the server arms a timer: close the socket if close-ok never comes

    def force_close(self, code: int, text: str):
        """Close from the broker's side (shutdown, management, deleted vhost or user)."""
        if self.state in (OPEN, AWAIT_OPEN, AWAIT_TUNE_OK):
            self.connection_error(ConnectionError_(text, code))
        else:
            self.note_end(text, logging.WARNING)
            self.finish_close()
        self.broker.flush_output()

    def _release(self):
        if self.holder is not None:
            # a held reply will not be sent: read again (a closing connection waits for close-ok)
            self.holder = None
            self.held_frames = None
            self.broker.defer(self._continue_input)
        for ch in list(self.channels.values()):
            ch.release()
        self.channels.clear()
        self.broker.connection_closed(self)

    def finish_close(self):
        if self.closed:
            return
        self._log_end()
        self.flush()
        self.closed = True
        self.state = CLOSED
        self._release()
        self.transport.close()
        if self.on_closed is not None:
            self.on_closed()

    def connection_lost(self):
        """The socket went away."""
        if self.closed:
            return
        if self.end_reason is None:
            if self.recv_oct:
                self.note_end("client unexpectedly closed TCP connection", logging.WARNING)
            else:       # a TCP health check: connected, sent nothing, went away
                self.note_end("client unexpectedly closed TCP connection", logging.DEBUG)
        self._log_end()
        self.closed = True
        self.state = CLOSED
        self._release()

    # ------------------------------------------------------------------ heartbeats
    def heartbeat_tick(self, now: float):
        """Called periodically by the server. Returns False if the peer is considered dead."""
        hb = self.heartbeat
        if not hb or self.state not in (OPEN, AWAIT_OPEN):
            return True
        if self.alarm_paused or self.flow_paused:
            # not read from on purpose (blocked by an alarm or by credit flow): its heartbeats wait
            # unread in the socket, so its silence says nothing (RabbitMQ pauses the check too)
            self.last_recv = now
        if now - self.last_recv > hb * 2:
            self.note_end(f"missed heartbeats from client, timeout: {hb}s", logging.ERROR)
            return False
        if now - self.last_send >= hb / 2:
            self.write(HEARTBEAT_FRAME)
            self.last_send = now
        return True

    # ------------------------------------------------------------------ the log line of its end
    def note_end(self, reason: str, level: int = logging.INFO):
        """Why the connection ends (the first reason given is kept), for the line _log_end writes."""
        if self.end_reason is None:
            self.end_reason = reason
            self.end_level = level

    def describe(self) -> str:
        """RabbitMQ's words for a connection in its log: addresses, vhost and user, duration."""
        parts = [self.name]
        if self.vhost is not None and self.user is not None:
            parts.append(f"vhost: '{self.vhost}', user: '{self.user.name}'")
        elif self.user is not None:
            parts.append(f"user: '{self.user.name}'")
        parts.append(f"duration: '{duration_text(time.time() - self.connected_at)}'")
        return ", ".join(parts)

    def _log_end(self):
        """One line when a connection ends, as RabbitMQ writes it: `closing AMQP connection (client
        -> server, vhost: '/', user: 'guest', duration: '3s'): why`."""
        if log.isEnabledFor(self.end_level):
            log.log(self.end_level, "closing AMQP connection (%s): %s", self.describe(),
                    self.end_reason or "closed by the broker")

    @property
    def state_name(self) -> str:
        """As RabbitMQ shows it: blocked once it published during a resource alarm (and is not
        read from), blocking while an alarm is on and it has not published since, flow while
        credit flow holds it."""
        if self.blocked or self.alarm_paused:
            return "blocked"
        if self.flow_paused:
            return "flow"
        if self.state == OPEN and self.broker.alarms:
            return "blocking"
        return _STATE_NAMES.get(self.state, "closed")


def duration_text(seconds: float) -> str:
    """A connection's age as RabbitMQ logs it: 250ms, 42s, 3M, 5s, 2H, 0M, 7s, 1D, 2H, 3M, 4s."""
    ms = max(0, int(seconds * 1000))
    if ms < 1000:
        return f"{ms}ms"
    s = ms // 1000
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}D, {h}H, {m}M, {s}s"
    if h:
        return f"{h}H, {m}M, {s}s"
    if m:
        return f"{m}M, {s}s"
    return f"{s}s"


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")
