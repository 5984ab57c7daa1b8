"""OpenCV's QR detector: a third, independent finder-pattern search and decoder.

OpenCV's Python binding returns text only, decoded as UTF-8 or Latin-1 and cut at the
first NUL byte, so a binary payload would come out as wrong bytes: a false read. It also
returns each code's sampled module grid ("straight" code). We re-decode that grid with
zxing-cpp in pure mode, which gives the payload's exact bytes; a grid that does not
re-decode is dropped rather than trusted.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_runtime.code import Code, best_effort_text

try:
    import zxingcpp
except ImportError:  # pragma: no cover - zxing-cpp is a hard dependency; keep OpenCV usable alone
    zxingcpp = None


class OpenCVDecoder:
    name = "opencv"

    def __init__(self) -> None:
        # The ArUco-based detector finds codes the classic one misses and is ~2x faster.
        factory = getattr(cv2, "QRCodeDetectorAruco", None) or cv2.QRCodeDetector
        self._det = factory()

    def decode(self, gray: np.ndarray, *, fast: bool = False) -> list[Code]:
        try:
            ok, texts, points, straight = self._det.detectAndDecodeMulti(gray)
        except (cv2.error, UnicodeDecodeError):
            # The binding raises on payloads that are not valid UTF-8; ZBar and
            # zxing-cpp carry those bytes losslessly.
            return []
        if not ok or points is None:
            return []
        grids = list(straight) if straight is not None else [None] * len(texts)
        out = []
        for text, quad, grid in zip(texts, points, grids):
            if not text:
                continue
            raw = _exact_bytes(grid) if zxingcpp is not None else _raw_bytes(text)
            if raw is None:
                continue
            out.append(
                Code(
                    text=best_effort_text(raw),
                    raw=raw,
                    format="QRCode",
                    corners=[(float(x), float(y)) for x, y in quad],
                    decoder=self.name,
                )
            )
        return out


def _exact_bytes(grid) -> bytes | None:
    """The payload bytes from OpenCV's sampled module grid (one pixel per module)."""
    if grid is None or getattr(grid, "size", 0) == 0:
        return None
    g = np.where(np.asarray(grid) > 127, 255, 0).astype(np.uint8)
    big = cv2.resize(np.pad(g, 4, constant_values=255), None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST)
    found = [b for b in zxingcpp.read_barcodes(big, is_pure=True) if b.valid]
    return bytes(found[0].bytes) if found else None


def _raw_bytes(text: str) -> bytes:
    """Without zxing-cpp: payloads that are not UTF-8 come out one char per byte
    (Latin-1); C1 controls (U+0080..U+009F) betray that, and Latin-1 gives the bytes back."""
    if any(0x80 <= ord(ch) <= 0x9F for ch in text):
        try:
            return text.encode("latin-1")
        except UnicodeEncodeError:
            pass
    return text.encode("utf-8", "surrogatepass")
