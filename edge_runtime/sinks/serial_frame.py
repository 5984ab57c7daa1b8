"""Framing for the PLC serial line: pure functions, no I/O, so every byte rule is testable alone.

A frame on the wire is::

    prefix + body + suffix [+ BCC]

- ``body`` is one payload, or several payloads joined by ``separator`` (several codes seen in
  the same window go out in one frame, so the PLC gets them in one telegram).
- A PLC parser finds frames by scanning for the prefix/suffix bytes, so a payload must never
  contain them: a QR code can hold any bytes (STX, ETX, CR, LF, NUL, ANSI escapes...). Every
  payload goes through a *control policy* first; afterwards it contains no byte of the prefix,
  suffix or separator, no byte below 0x20 and no 0x7f:

  - ``escape`` (default, lossless): such a byte becomes the 4 ASCII characters ``\\xNN``
    (lowercase hex, like Python's repr) and a backslash becomes ``\\\\``; ``unescape`` reverses it.
  - ``replace``: each such byte becomes the replacement character (default ``?``).
  - ``strip``: each such byte is removed.

  Bytes >= 0x80 are left alone (UTF-8 text and raw binary codes pass unchanged).
- ``BCC`` (``checksum="xor"``): the common industrial block check character: one byte, the XOR
  of every byte after the prefix up to and including the suffix (body + suffix), appended after
  the suffix. It can take any value, including STX/ETX; PLCs read exactly one byte after ETX.

Framing strings (prefix/suffix/separator/replacement) are given as text whose characters are
U+0000..U+00FF, one byte each (latin-1): "\\x02" is byte 0x02. In TOML write "\\u0002".
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

STX, ETX, ACK, NAK, CR, LF = 0x02, 0x03, 0x06, 0x15, 0x0D, 0x0A
BACKSLASH = 0x5C
CONTROL_POLICIES = ("escape", "replace", "strip")
CHECKSUMS = ("none", "xor")
# The escape sequence itself is made of these: a framing byte among them would be ambiguous.
_ESCAPE_ALPHABET = frozenset(b"\\x0123456789abcdef")


def to_bytes(value: str | bytes, what: str) -> bytes:
    """Framing option -> bytes, one byte per character (so "\\x02" is exactly 0x02)."""
    if isinstance(value, bytes):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{what} must use characters U+0000..U+00FF (one byte each), got {value!r}") from None


def reserved_bytes(*framing: bytes) -> frozenset[int]:
    """Bytes a payload may never carry on the wire: the framing bytes and every control byte."""
    out = set(range(0x20)) | {0x7F}
    for f in framing:
        out.update(f)
    return frozenset(out)


def check_framing(prefix: bytes, suffix: bytes, separator: bytes, control: str, replacement: bytes) -> None:
    """Reject framing that would make `apply_control`'s guarantee impossible (raise ValueError)."""
    if control not in CONTROL_POLICIES:
        raise ValueError(f"control must be one of {', '.join(CONTROL_POLICIES)}, got {control!r}")
    if not suffix:
        raise ValueError("suffix must not be empty: the PLC needs a terminator to find the end of a frame")
    if not separator:
        raise ValueError("separator must not be empty: codes sent in one frame would run together")
    if set(separator) & (set(prefix) | set(suffix)):
        raise ValueError("separator must not share a byte with prefix or suffix: the PLC could not tell them apart")
    framing = set(prefix) | set(suffix) | set(separator)
    if control == "escape" and framing & _ESCAPE_ALPHABET:
        raise ValueError("with control=\"escape\", prefix/suffix/separator must not contain \\, x or 0-9a-f "
                         "(they appear inside escape sequences)")
    if control == "replace":
        if len(replacement) != 1:
            raise ValueError(f"replacement must be exactly one character, got {replacement!r}")
        if replacement[0] in reserved_bytes(prefix, suffix, separator):
            raise ValueError(f"replacement {replacement!r} is itself a framing or control byte")


def apply_control(payload: bytes, policy: str, reserved: frozenset[int], replacement: bytes = b"?") -> bytes:
    """Make `payload` safe to put between framing bytes (see module docstring for the policies)."""
    if policy == "escape":
        out = bytearray()
        for b in payload:
            if b == BACKSLASH:
                out += b"\\\\"
            elif b in reserved:
                out += b"\\x%02x" % b
            else:
                out.append(b)
        return bytes(out)
    if policy == "replace":
        return bytes(replacement[0] if b in reserved else b for b in payload)
    if policy == "strip":
        return bytes(b for b in payload if b not in reserved)
    raise ValueError(f"control must be one of {', '.join(CONTROL_POLICIES)}, got {policy!r}")


_UNESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def unescape(data: bytes) -> bytes:
    """Inverse of the "escape" policy (for receivers written in Python, and for tests)."""
    def sub(m: re.Match[bytes]) -> bytes:
        tok = m.group(1)
        return b"\\" if tok == b"\\" else bytes([int(tok[1:], 16)])
    return _UNESCAPE.sub(sub, data)


def bcc_xor(data: bytes) -> int:
    """XOR of all bytes: the block check character used by most PLC serial protocols."""
    x = 0
    for b in data:
        x ^= b
    return x


# Output templates ("standard formatting"): `{name}` placeholders from this fixed set, the rest
# literal text; `{{` and `}}` are literal braces. Parsed here, never given to str.format: a
# config string must not reach attribute access, indexing or format specs.
TEMPLATE_FIELDS = ("text", "id", "grade", "score", "match", "x", "y", "decoder", "stage", "ts", "device_id",
                   "quality.grade", "quality.score")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def parse_template(template: str) -> list[str | tuple[str]]:
    """Literal strings and (field,) tuples, in order; ValueError naming the bad part."""
    out: list[str | tuple[str]] = []
    pos = 0
    for m in _TOKEN.finditer(template):
        if m.start() > pos:
            out.append(template[pos:m.start()])
        tok = m.group(0)
        if tok in ("{{", "}}"):
            out.append(tok[0])
        elif m.group(1) is None:
            raise ValueError(f"unbalanced {tok!r} at position {m.start()} (write {tok * 2} for a literal brace)")
        elif m.group(1).strip() not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown field {{{m.group(1)}}}; fields: {', '.join(TEMPLATE_FIELDS)}")
        else:
            out.append((m.group(1).strip(),))
        pos = m.end()
    if pos < len(template):
        out.append(template[pos:])
    return out


def _centre(result: dict) -> tuple[str, str]:
    pts = result.get("corners") or []
    if not pts:
        return "", ""
    return (str(round(sum(p[0] for p in pts) / len(pts))), str(round(sum(p[1] for p in pts) / len(pts))))


def template_value(name: str, result: dict, payload: bytes, encoding: str) -> bytes:
    """One field's bytes (before the control policy, like the payload). Absent values are empty."""
    if name == "text":
        return payload
    quality = result.get("quality") if isinstance(result.get("quality"), dict) else {}
    if name in ("grade", "quality.grade"):
        v = quality.get("grade")
    elif name in ("score", "quality.score"):
        v = quality.get("score")
        v = None if v is None else f"{float(v):g}"
    elif name == "match":
        v = {True: "1", False: "0"}.get(result.get("match"))
    elif name in ("x", "y"):
        v = _centre(result)[name == "y"]
    else:  # id, decoder, stage, ts, device_id
        v = result.get(name)
    return b"" if v is None else str(v).encode(encoding, errors="replace")


def result_payload(result: dict, noread: bytes, encoding: str, *, mismatch: bytes = b"",
                   template: list | None = None) -> bytes:
    """The bytes a result contributes to a frame, before the control policy.

    A no-read is the configured `noread` string; a read that failed the match-code check
    (``"match": false``) is the `mismatch` string when one is set. A code whose raw bytes are
    not UTF-8 text (the result carries `bytes_b64`) is sent as its raw bytes: the PLC gets
    what the label holds, not a lossy re-encoding. Text that `encoding` cannot represent
    gets "?". With a `template` (parse_template), that payload is its `{text}` field and the
    other fields come from the result.
    """
    payload = _payload(result, noread, encoding, mismatch)
    if template is None:
        return payload
    return b"".join(tok.encode(encoding, errors="replace") if isinstance(tok, str)
                    else template_value(tok[0], result, payload, encoding) for tok in template)


def _payload(result: dict, noread: bytes, encoding: str, mismatch: bytes) -> bytes:
    if result.get("kind") == "noread":
        return noread
    if mismatch and result.get("match") is False:
        return mismatch
    b64 = result.get("bytes_b64")
    if b64:
        return base64.b64decode(b64)
    text = result.get("text")
    if text is None:
        return b""
    return str(text).encode(encoding, errors="replace")


def build_frame(payloads: list[bytes], *, prefix: bytes, suffix: bytes, separator: bytes,
                control: str = "escape", replacement: bytes = b"?", checksum: str = "none") -> bytes:
    """One frame for one or more payloads (see module docstring for the exact layout)."""
    if checksum not in CHECKSUMS:
        raise ValueError(f"checksum must be one of {', '.join(CHECKSUMS)}, got {checksum!r}")
    reserved = reserved_bytes(prefix, suffix, separator)
    body = separator.join(apply_control(p, control, reserved, replacement) for p in payloads)
    frame = prefix + body + suffix
    if checksum == "xor":
        frame += bytes([bcc_xor(body + suffix)])
    return frame


@dataclass
class CommandParser:
    """Splits what the PLC sends into events: ("ack",), ("nak",) and ("cmd", text).

    ACK (0x06) and NAK (0x15) are single bytes and count wherever they appear. A command is
    text terminated by CR, LF or CRLF, or wrapped in STX ... ETX (an STX starts a new command,
    dropping any half-received garbage before it). Whitespace around a command is ignored.
    A line longer than `max_line` bytes is discarded so line noise cannot grow memory.
    """

    max_line: int = 256
    _buf: bytearray = field(default_factory=bytearray)
    _overflow: bool = False

    def feed(self, data: bytes) -> list[tuple[str, ...]]:
        events: list[tuple[str, ...]] = []
        for b in data:
            if b == ACK:
                events.append(("ack",))
            elif b == NAK:
                events.append(("nak",))
            elif b == STX:
                self._buf.clear()
                self._overflow = False
            elif b in (CR, LF, ETX):
                if self._buf and not self._overflow:
                    text = self._buf.decode("latin-1").strip()
                    if text:
                        events.append(("cmd", text))
                self._buf.clear()
                self._overflow = False
            elif len(self._buf) >= self.max_line:
                self._overflow = True
            else:
                self._buf.append(b)
        return events
