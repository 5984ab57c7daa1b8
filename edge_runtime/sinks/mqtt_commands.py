"""Parse a command arriving on {topic_prefix}/{device_id}/cmd into a dict for the service.

Accepted: a JSON object with a string "cmd" ({"cmd": "trigger", ...}), a JSON string
("trigger"), or a bare word (LON, LOFF, trigger, reload) as PLC gateways tend to send.
Anything else is rejected with a short reason; the caller logs it as one line and goes on,
because a stray publish on the command topic must never stop a production line.
"""

from __future__ import annotations

import json
import re

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
MAX_COMMAND_BYTES = 64 * 1024


class BadCommand(ValueError):
    pass


def parse_command(payload: bytes) -> dict:
    if len(payload) > MAX_COMMAND_BYTES:
        raise BadCommand(f"payload of {len(payload)} bytes exceeds {MAX_COMMAND_BYTES}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadCommand("payload is not UTF-8") from None
    if _WORD.fullmatch(text):
        return {"cmd": text}
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as e:  # "[[[[..." x 2000 overflows the decoder's stack
        raise BadCommand(f"payload is neither JSON nor a bare command word ({str(e)[:80]})") from None
    if isinstance(value, str) and _WORD.fullmatch(value.strip()):
        return {"cmd": value.strip()}
    if isinstance(value, dict) and isinstance(value.get("cmd"), str) and value["cmd"].strip():
        return value
    raise BadCommand('JSON payload must be an object with a string "cmd" or a command word')


def preview(payload: bytes, limit: int = 80) -> str:
    """A log-safe, one-line rendering of an untrusted payload (no control chars, bounded)."""
    s = payload[:limit].decode("utf-8", errors="replace")
    s = s.encode("unicode_escape").decode("ascii")
    return s + ("..." if len(payload) > limit else "")
