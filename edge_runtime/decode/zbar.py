"""ZBar via pyzbar: the on-device fallback on the whole frame when nothing else read."""

from __future__ import annotations

import numpy as np
from pyzbar import pyzbar

from edge_runtime.code import Code, best_effort_text


def _order(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """ZBar's polygon has no fixed start; give clockwise from top-left like the others."""
    pts = np.asarray(points, dtype=np.float64)
    if len(pts) != 4:
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    c = pts.mean(axis=0)
    ang = np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0])
    pts = pts[np.argsort(ang)]
    start = int(np.argmin(pts.sum(axis=1)))
    pts = np.roll(pts, -start, axis=0)
    return [(float(x), float(y)) for x, y in pts]


class ZbarDecoder:
    name = "zbar"

    def __init__(self) -> None:
        self._symbols = [pyzbar.ZBarSymbol.QRCODE]

    def decode(self, gray: np.ndarray, *, fast: bool = False) -> list[Code]:
        out = []
        for r in pyzbar.decode(np.ascontiguousarray(gray), symbols=self._symbols):
            raw = bytes(r.data)
            out.append(
                Code(
                    text=best_effort_text(raw),
                    raw=raw,
                    format="QRCode",
                    corners=_order([(p.x, p.y) for p in r.polygon]),
                    decoder=self.name,
                )
            )
        return out
