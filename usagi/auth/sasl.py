"""SASL mechanisms offered in connection.start: PLAIN and AMQPLAIN."""
from __future__ import annotations

from ..amqp.errors import SyntaxError_
from ..amqp.table import decode_table

MECHANISMS = ("PLAIN", "AMQPLAIN")


class SaslError(Exception):
    pass


def parse_response(mechanism: str, response: bytes) -> tuple[str, str]:
    """(username, password) from a start-ok response."""
    if mechanism == "PLAIN":
        parts = response.split(b"\0")
        if len(parts) != 3:
            raise SaslError("PLAIN response is not authzid NUL user NUL password")
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        # a field table without its length prefix
        try:
            table, _ = decode_table(len(response).to_bytes(4, "big") + response)
        except SyntaxError_ as e:
            raise SaslError(f"AMQPLAIN response: {e.text}") from None
        login = table.get("LOGIN")
        password = table.get("PASSWORD")
        if login is None or password is None:
            raise SaslError("AMQPLAIN response lacks LOGIN or PASSWORD")
        if isinstance(login, bytes):
            login = login.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        return str(login), str(password)
    raise SaslError(f"unsupported mechanism {mechanism}")
