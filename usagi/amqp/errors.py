"""Reply codes and the errors that close a channel or a connection."""
from __future__ import annotations

REPLY_SUCCESS = 200
CONTENT_TOO_LARGE = 311
NO_ROUTE = 312
NO_CONSUMERS = 313
CONNECTION_FORCED = 320
INVALID_PATH = 402
ACCESS_REFUSED = 403
NOT_FOUND = 404
RESOURCE_LOCKED = 405
PRECONDITION_FAILED = 406
FRAME_ERROR = 501
SYNTAX_ERROR = 502
COMMAND_INVALID = 503
CHANNEL_ERROR = 504
UNEXPECTED_FRAME = 505
RESOURCE_ERROR = 506
NOT_ALLOWED = 530
NOT_IMPLEMENTED = 540
INTERNAL_ERROR = 541

REPLY_NAMES = {
    REPLY_SUCCESS: "OK", CONTENT_TOO_LARGE: "CONTENT_TOO_LARGE", NO_ROUTE: "NO_ROUTE",
    NO_CONSUMERS: "NO_CONSUMERS", CONNECTION_FORCED: "CONNECTION_FORCED", INVALID_PATH: "INVALID_PATH",
    ACCESS_REFUSED: "ACCESS_REFUSED", NOT_FOUND: "NOT_FOUND", RESOURCE_LOCKED: "RESOURCE_LOCKED",
    PRECONDITION_FAILED: "PRECONDITION_FAILED", FRAME_ERROR: "FRAME_ERROR", SYNTAX_ERROR: "SYNTAX_ERROR",
    COMMAND_INVALID: "COMMAND_INVALID", CHANNEL_ERROR: "CHANNEL_ERROR", UNEXPECTED_FRAME: "UNEXPECTED_FRAME",
    RESOURCE_ERROR: "RESOURCE_ERROR", NOT_ALLOWED: "NOT_ALLOWED", NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    INTERNAL_ERROR: "INTERNAL_ERROR",
}

# Codes that RabbitMQ treats as hard errors: they close the whole connection.
HARD_ERRORS = frozenset({CONNECTION_FORCED, INVALID_PATH, FRAME_ERROR, SYNTAX_ERROR, COMMAND_INVALID,
                         CHANNEL_ERROR, UNEXPECTED_FRAME, RESOURCE_ERROR, NOT_ALLOWED, NOT_IMPLEMENTED,
                         INTERNAL_ERROR})


class AMQPError(Exception):
    """An error the peer is told about with channel.close or connection.close.

    `text` is the detail; the reply text on the wire is "NAME - detail", as RabbitMQ writes it.
    """

    code = INTERNAL_ERROR
    send_anyway = False   # send connection.close even during the handshake (authentication failures)

    def __init__(self, text: str = "", code: int | None = None, class_id: int = 0, method_id: int = 0):
        super().__init__(text)
        if code is not None:
            self.code = code
        self.text = text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def reply_text(self) -> str:
        text = f"{REPLY_NAMES.get(self.code, 'ERROR')} - {self.text}"
        b = text.encode("utf-8", "surrogateescape")
        if len(b) > 255:
            text = b[:255].decode("utf-8", "ignore")
        return text

    @property
    def hard(self) -> bool:
        return self.code in HARD_ERRORS


class ChannelError(AMQPError):
    """Closes the channel (soft error) unless its code is a hard one."""


class ConnectionError_(AMQPError):
    """Closes the connection."""


class FrameError(ConnectionError_):
    code = FRAME_ERROR


class SyntaxError_(ConnectionError_):
    code = SYNTAX_ERROR


class UnexpectedFrame(ConnectionError_):
    code = UNEXPECTED_FRAME


def channel_error(code: int, text: str, method=None) -> ChannelError:
    e = ChannelError(text, code)
    if method is not None:
        e.class_id, e.method_id = method.CLASS_ID, method.METHOD_ID
    return e


def connection_error(code: int, text: str, method=None) -> ConnectionError_:
    e = ConnectionError_(text, code)
    if method is not None:
        e.class_id, e.method_id = method.CLASS_ID, method.METHOD_ID
    return e
