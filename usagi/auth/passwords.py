"""Password hashes in RabbitMQ's format, so that definitions move between the two.

rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ utf8(password))) with a 4-byte salt.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import os

SHA256 = "rabbit_password_hashing_sha256"
SHA512 = "rabbit_password_hashing_sha512"
MD5 = "rabbit_password_hashing_md5"
_ALGOS = {SHA256: hashlib.sha256, SHA512: hashlib.sha512, MD5: hashlib.md5}


def hash_password(password: str, algorithm: str = SHA256, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    digest = _ALGOS[algorithm](salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode()


def check_password(password: str, password_hash: str, algorithm: str = SHA256) -> bool:
    if not password_hash:
        return False
    try:
        raw = base64.b64decode(password_hash)
    except ValueError:
        return False
    fn = _ALGOS.get(algorithm, hashlib.sha256)
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(fn(salt + password.encode("utf-8")).digest(), digest)
