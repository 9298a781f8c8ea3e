"""TLS for the AMQPS listener (and the management API's HTTPS): TLS 1.2 and later only.

The settings follow RabbitMQ's ssl_options: certfile, keyfile, cacertfile, verify
(verify_none | verify_peer) and fail_if_no_peer_cert. `verify` here takes three values:

    none     no client certificate asked for                  (verify_none)
    peer     asked for and verified if sent; not required     (verify_peer, fail_if_no_peer_cert=false)
    require  asked for, verified, and required                (verify_peer, fail_if_no_peer_cert=true)

SASL EXTERNAL is offered on a listener that asks for client certificates (peer or require).
"""
from __future__ import annotations

import ssl

VERIFY_MODES = ("none", "peer", "require")
DEFAULT_TLS_PORT = 5671
HANDSHAKE_TIMEOUT = 5.0     # RabbitMQ's ssl_handshake_timeout, in seconds


class TLSConfigError(Exception):
    pass


def parse_verify(text) -> str:
    """--tls-verify / USAGI_TLS_VERIFY: none, peer, require; also RabbitMQ's words and booleans."""
    t = str(text or "none").strip().lower()
    aliases = {"": "none", "0": "none", "false": "none", "no": "none", "off": "none", "verify_none": "none",
               "1": "require", "true": "require", "yes": "require", "on": "require",
               "verify_peer": "require", "fail_if_no_peer_cert": "require", "optional": "peer"}
    t = aliases.get(t, t)
    if t not in VERIFY_MODES:
        raise TLSConfigError(f"--tls-verify must be one of {', '.join(VERIFY_MODES)}, got {text!r}")
    return t


def server_context(certfile: str, keyfile: str | None = None, cafile: str | None = None,
                   verify: str = "none", password: str | None = None) -> ssl.SSLContext:
    """A server-side context: TLS 1.2+, the server's certificate chain (its key decrypted with
    `password`, ssl_options.password, if it is encrypted), optional client verification."""
    verify = parse_verify(verify)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        # a password callback that gives nothing when none is set: never a prompt on the terminal
        ctx.load_cert_chain(certfile, keyfile or None, password=password if password else lambda: b"")
    except (OSError, ssl.SSLError) as e:
        raise TLSConfigError(f"cannot load TLS certificate {certfile!r} / key {keyfile!r}: {e}") from None
    if cafile:
        try:
            ctx.load_verify_locations(cafile)
        except (OSError, ssl.SSLError) as e:
            raise TLSConfigError(f"cannot load TLS CA certificates {cafile!r}: {e}") from None
    if verify != "none":
        if not cafile:
            raise TLSConfigError("--tls-verify needs --tls-ca: the CA certificates that client "
                                 "certificates are verified against")
        ctx.verify_mode = ssl.CERT_REQUIRED if verify == "require" else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe(ctx: ssl.SSLContext) -> str:
    mode = {ssl.CERT_NONE: "none", ssl.CERT_OPTIONAL: "peer", ssl.CERT_REQUIRED: "require"}[ctx.verify_mode]
    return f"TLS 1.2+, client certificates: {mode}"
