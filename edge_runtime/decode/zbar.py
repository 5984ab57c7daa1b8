"""ZBar via pyzbar: the on-device fallback on the whole frame when nothing else read.

pyzbar's `decode()` lets ZBar transcode QR payloads to UTF-8, which loses the original
bytes of Shift-JIS or binary codes. We drive the same libzbar calls ourselves with
ZBar's binary mode on (zbar >= 0.23), so `raw` is exactly what the code holds.
"""

from __future__ import annotations

from ctypes import c_void_p, cast

import numpy as np
from pyzbar import pyzbar
from pyzbar import wrapper as zw

from edge_runtime.code import Code, best_effort_text

_CFG_BINARY = 4  # ZBAR_CFG_BINARY in zbar.h (>= 0.23); pyzbar's enum predates it
_L800 = 0x30303859  # fourcc 'Y800': 8-bit grayscale


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
        # Importing pyzbar already loaded libzbar (or raised ImportError: no libzbar0).
        self._qr = pyzbar.ZBarSymbol.QRCODE

    def decode(self, gray: np.ndarray, *, fast: bool = False) -> list[Code]:
        gray = np.ascontiguousarray(gray, dtype=np.uint8)
        h, w = gray.shape
        pixels = gray.tobytes()
        out = []
        with pyzbar._image_scanner() as scanner:
            zw.zbar_image_scanner_set_config(scanner, pyzbar.ZBarSymbol.NONE, zw.ZBarConfig.CFG_ENABLE, 0)
            zw.zbar_image_scanner_set_config(scanner, self._qr, zw.ZBarConfig.CFG_ENABLE, 1)
            binary = zw.zbar_image_scanner_set_config(scanner, self._qr, _CFG_BINARY, 1) == 0
            with pyzbar._image() as img:
                zw.zbar_image_set_format(img, _L800)
                zw.zbar_image_set_size(img, w, h)
                zw.zbar_image_set_data(img, cast(pixels, c_void_p), len(pixels), None)
                if zw.zbar_scan_image(scanner, img) < 0:
                    return []
                for r in pyzbar._decode_symbols(pyzbar._symbols_for_image(img)):
                    raw = bytes(r.data)
                    out.append(
                        Code(
                            text=best_effort_text(raw) if binary else raw.decode("utf-8", "replace"),
                            raw=raw,
                            format="QRCode",
                            corners=_order([(p.x, p.y) for p in r.polygon]),
                            decoder=self.name,
                        )
                    )
        return out
