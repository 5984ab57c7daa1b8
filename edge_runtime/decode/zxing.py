"""zxing-cpp: the primary decoder, the strongest and fastest of the open ones."""

from __future__ import annotations

import numpy as np
import zxingcpp

from edge_runtime.code import Code, best_effort_text

# QR Code only by default: scanning for every 1D symbology costs ~10x and a plant's 1D
# labels next to the QR code would come out as extra "reads". Micro QR and rMQR are opt-in
# (`ZxingDecoder(micro=True)`): their error correction is too weak against label print —
# in a 100,000-frame soak zxing-cpp read Micro QR "codes" out of the text beside the real
# code, consistently over consecutive frames.
_BF = zxingcpp.BarcodeFormat
# zxing-cpp 3 made QRCode the whole family (Model 1/2, Micro, rMQR); 2.x has no Model names.
_QR_ONLY = [getattr(_BF, n) for n in ("QRCodeModel2", "QRCodeModel1") if hasattr(_BF, n)] or [_BF.QRCode]
_FAMILIES = {
    False: _QR_ONLY,
    True: [*_QR_ONLY, _BF.MicroQRCode, _BF.RMQRCode],
}


def _formats(family: list):
    try:  # zxing-cpp >= 3 takes a list and deprecates `|`; 2.x only has `|`
        return zxingcpp.BarcodeFormats(family)
    except (AttributeError, TypeError):
        f = family[0]
        for x in family[1:]:
            f = f | x
        return f


def _fmt(barcode) -> str:
    name = str(barcode.format)
    return {"QR Code": "QRCode", "Micro QR Code": "MicroQRCode", "rMQR Code": "RMQRCode"}.get(name, name.replace(" ", ""))


def _corners(pos) -> list[tuple[float, float]]:
    return [(float(p.x), float(p.y)) for p in (pos.top_left, pos.top_right, pos.bottom_right, pos.bottom_left)]


class ZxingDecoder:
    name = "zxing"

    def __init__(self, binarizer: str = "LocalAverage", micro: bool = False) -> None:
        self.binarizer = getattr(zxingcpp.Binarizer, binarizer)
        self.formats = _formats(_FAMILIES[bool(micro)])

    def _read(self, gray: np.ndarray, binarizer, **options):  # noqa: ANN001, ANN202
        return zxingcpp.read_barcodes(np.ascontiguousarray(gray), formats=self.formats, try_rotate=True,
                                      binarizer=binarizer, text_mode=zxingcpp.TextMode.HRI, **options)

    def decode(self, gray: np.ndarray, *, fast: bool = False, binarizer: str | None = None, invert: bool = True) -> list[Code]:
        """`invert=False` skips the search for light-on-dark codes: a third of a
        1280x720 frame's time (3.3 -> 2.3 ms), which a video stream pays every other frame."""
        bz = getattr(zxingcpp.Binarizer, binarizer) if binarizer else self.binarizer
        found = self._read(gray, bz, try_downscale=not fast, try_invert=invert)
        out = []
        for b in found:
            if not b.valid:
                continue
            raw = bytes(b.bytes)
            out.append(Code(text=_text(b, raw), raw=raw, format=_fmt(b), corners=_corners(b.position), decoder=self.name))
        return out


    def failed_quads(self, gray: np.ndarray) -> list[list[tuple[float, float]]]:
        """Corners of the QR symbols zxing-cpp located but could not decode (a checksum or
        format failure): for the erasure decoder, which needs corners closer than a
        detector's upright box gives them. [] on a zxing-cpp without `return_errors`."""
        try:
            found = self._read(gray, self.binarizer, try_downscale=False, try_invert=False, return_errors=True)
        except TypeError:
            return []
        return [_corners(b.position) for b in found if not b.valid]


def _text(b, raw: bytes) -> str:
    # zxing-cpp honours ECI and gives the right text when the code declares its
    # charset; for undeclared binary payloads its HRI text is a guess, so prefer ours.
    if b.content_type == zxingcpp.ContentType.Binary:
        return best_effort_text(raw)
    return b.text
