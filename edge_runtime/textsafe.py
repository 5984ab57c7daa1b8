"""Make untrusted payload text safe to print: a QR code can carry ANSI escapes or
control characters that would rewrite an operator's terminal or forge log lines, and
bidi controls that make the line read differently from what it holds (Trojan Source)."""

from __future__ import annotations

# Unicode's Bidi_Control characters: ALM, LRM, RLM, the embeddings/overrides and the isolates.
BIDI_CONTROLS = frozenset([0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)])


def _unsafe(o: int) -> bool:
    # C0 controls, DEL, C1 controls (CSI 0x9b is an escape on some terminals), the Unicode
    # line/paragraph separators (a new line to some viewers) and the bidi controls.
    return o < 0x20 or 0x7F <= o < 0xA0 or o in (0x2028, 0x2029) or o in BIDI_CONTROLS


def printable(text: str, limit: int | None = None) -> str:
    """The text as it is, except the characters that would break the line or the terminal:
    those become \\xNN (C0, DEL, C1) or \\uNNNN (separators, bidi controls). A backslash is
    printed as itself, so a payload is shown as the user would type it; the one ambiguity
    (a payload that literally holds the four characters \\x1b) is why --json exists."""
    out = []
    for ch in text if limit is None else text[:limit]:
        o = ord(ch)
        if _unsafe(o):
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}")
        else:
            out.append(ch)
    if limit is not None and len(text) > limit:
        out.append("…")
    return "".join(out)
