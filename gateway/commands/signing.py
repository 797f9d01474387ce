"""Signed requests: HMAC-SHA256 with a per-gateway key, and what makes a replay fail.

With ``[commands] hmac_key_file`` set, every request is
``{"signed": "<the request JSON, as a string>", "sig": "<hex HMAC-SHA256>"}`` where the
MAC covers ``"{command}\\n" + signed``. The request inside is taken as sent (no
canonical JSON to agree on), names the command it is for (a request signed for
``ping`` cannot be replayed as ``reload``), and must carry ``expires`` no further
ahead than ids are remembered: a replay within that time is a seen id, after it
an expired request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

MIN_KEY_BYTES = 16


class SignatureError(ValueError):
    """The request is not signed with the gateway's key, or not in the signed form."""


def load_key(path: Path | None) -> bytes | None:
    """The key in ``path`` (surrounding whitespace removed); blocking."""
    if path is None:
        return None
    key = path.read_bytes().strip()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path} holds {len(key)} bytes of key, at least {MIN_KEY_BYTES} needed")
    return key


def sign(key: bytes, command: str, signed: str) -> str:
    message = command.encode() + b"\n" + signed.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def verified(key: bytes, command: str, outer: dict[str, object]) -> object:
    """The request inside a signed envelope, once its signature is checked."""
    signed, sig = outer.get("signed"), outer.get("sig")
    if not isinstance(signed, str) or not isinstance(sig, str):
        raise SignatureError('a signed request is {"signed": "<request JSON>", "sig": "<hex>"}')
    if not hmac.compare_digest(sign(key, command, signed), sig.lower()):
        raise SignatureError("bad signature")
    try:
        return json.loads(signed)
    except (ValueError, RecursionError) as err:
        raise SignatureError(f"the signed request is not JSON: {err}") from None
