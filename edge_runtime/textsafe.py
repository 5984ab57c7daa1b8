"""Make untrusted payload text safe to print: a QR code can carry ANSI escapes or
control characters that would rewrite an operator's terminal or forge log lines."""

from __future__ import annotations


def printable(text: str, limit: int | None = None) -> str:
    """Escape C0/C1 controls and DEL as \\xNN (\\\\ for backslash) so the result is one safe line."""
    out = []
    for ch in text if limit is None else text[:limit]:
        o = ord(ch)
        if ch == "\\":
            out.append("\\\\")
        elif o < 0x20 or 0x7F <= o < 0xA0 or o in (0x2028, 0x2029) or 0x202A <= o <= 0x202E or 0x2066 <= o <= 0x2069:  # + bidi overrides (Trojan Source)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    if limit is not None and len(text) > limit:
        out.append("…")
    return "".join(out)
