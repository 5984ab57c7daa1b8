"""zxing-cpp: the primary decoder, the strongest and fastest of the open ones."""

from __future__ import annotations

import numpy as np
import zxingcpp

from edge_runtime.code import Code, best_effort_text

# QR family only: scanning for every 1D symbology costs ~10x and a plant's 1D
# labels next to the QR code would come out as extra "reads".
_QR_FAMILY = [zxingcpp.BarcodeFormat.QRCode, zxingcpp.BarcodeFormat.MicroQRCode, zxingcpp.BarcodeFormat.RMQRCode]
try:  # zxing-cpp >= 3 takes a list and deprecates `|`; 2.x only has `|`
    _FORMATS = zxingcpp.BarcodeFormats(_QR_FAMILY)
except (AttributeError, TypeError):
    _FORMATS = _QR_FAMILY[0] | _QR_FAMILY[1] | _QR_FAMILY[2]


def _fmt(barcode) -> str:
    name = str(barcode.format)
    return {"QR Code": "QRCode", "Micro QR Code": "MicroQRCode", "rMQR Code": "RMQRCode"}.get(name, name.replace(" ", ""))


def _corners(pos) -> list[tuple[float, float]]:
    return [(float(p.x), float(p.y)) for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]


class ZxingDecoder:
    name = "zxing"

    def __init__(self, binarizer: str = "LocalAverage") -> None:
        self.binarizer = getattr(zxingcpp.Binarizer, binarizer)

    def decode(self, gray: np.ndarray, *, fast: bool = False, binarizer: str | None = None) -> list[Code]:
        bz = getattr(zxingcpp.Binarizer, binarizer) if binarizer else self.binarizer
        found = zxingcpp.read_barcodes(
            np.ascontiguousarray(gray),
            formats=_FORMATS,
            try_rotate=True,
            try_downscale=not fast,
            try_invert=True,
            binarizer=bz,
            text_mode=zxingcpp.TextMode.HRI,
        )
        out = []
        for b in found:
            if not b.valid:
                continue
            raw = bytes(b.bytes)
            out.append(Code(text=_text(b, raw), raw=raw, format=_fmt(b), corners=_corners(b.position), decoder=self.name))
        return out


def _text(b, raw: bytes) -> str:
    # zxing-cpp honours ECI and gives the right text when the code declares its
    # charset; for undeclared binary payloads its HRI text is a guess, so prefer ours.
    if b.content_type == zxingcpp.ContentType.Binary:
        return best_effort_text(raw)
    return b.text
