"""Payloads like the ones plants print: lot numbers, URLs, GS1 strings, binary, Shift-JIS.

Binary and Shift-JIS payloads are there on purpose: a decoder that returns text and
re-encodes it as UTF-8 delivers the wrong bytes, and the bench counts that as a false read.
"""

from __future__ import annotations

import numpy as np

_SJIS_ITEMS = ["品番", "数量", "製造", "出荷", "検査", "部品"]


def _non_utf8(rng: np.random.Generator, n: int) -> bytes:
    while True:
        b = bytes(rng.integers(0, 256, size=n, dtype=np.uint8))
        try:
            b.decode("utf-8")
        except UnicodeDecodeError:
            return b


def make_payload(rng: np.random.Generator, kind: str | None = None) -> bytes:
    """One payload of a random (weighted) or named kind: lot, url, gs1, binary, sjis."""
    if kind is None:
        kind = str(rng.choice(["lot", "url", "gs1", "binary", "sjis"], p=[0.45, 0.15, 0.2, 0.1, 0.1]))
    if kind == "lot":
        return f"LOT-{int(rng.integers(0, 10**6)):06d}".encode()
    if kind == "url":
        return f"https://trace.example.com/p/{int(rng.integers(10**5, 10**6))}?lot=A{int(rng.integers(0, 10**4)):04d}".encode()
    if kind == "gs1":
        gtin = f"0{int(rng.integers(10**12, 10**13))}"
        return (
            f"01{gtin}17{int(rng.integers(26, 30))}1231\x1d10B{int(rng.integers(0, 10**5)):05d}"
            f"\x1d21S{int(rng.integers(0, 10**7)):07d}"
        ).encode()
    if kind == "binary":
        return _non_utf8(rng, int(rng.integers(8, 24)))
    if kind == "sjis":
        item = str(rng.choice(_SJIS_ITEMS))
        return f"{item}:A-{int(rng.integers(0, 10**4)):04d} 数量{int(rng.integers(1, 99))}".encode("shift_jis")
    raise ValueError(f"unknown payload kind {kind!r}")
