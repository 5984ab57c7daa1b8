"""The result of reading one code: a plain object, like zxing-cpp's Barcode."""

from __future__ import annotations

from dataclasses import dataclass, field

Corners = list[tuple[float, float]]


def best_effort_text(raw: bytes) -> str:
    """Text for people and JSON; `raw` stays the lossless truth.

    QR byte mode is ISO-8859-1 by the standard but UTF-8 in practice; Japanese labels
    use Shift-JIS. Try them in the order a plant is likely to meet them.
    """
    for enc in ("utf-8", "shift_jis"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


@dataclass
class Code:
    """One code read in one frame.

    `corners` are four (x, y) points in frame coordinates, clockwise from the code's
    top-left. `stage` says how hard the reader had to work: direct (whole frame, first
    try), roi (a detected region), enhanced (after an enhancement), fallback (ZBar or
    OpenCV on the whole frame once the rest read nothing).
    """

    text: str
    raw: bytes
    format: str = "QRCode"
    corners: Corners = field(default_factory=list)
    decoder: str = ""
    stage: str = "direct"
    elapsed_ms: float = 0.0
    kind: str = "read"
    # Reed–Solomon use of a read, for print-quality work: {"corrected", "erased", "capacity"}
    # (codewords). Only decoders that know it (the grid decoder) fill it in.
    ec: dict | None = None
    # Print quality of a read (edge_runtime.quality.measure), filled by attach_quality
    # after the read: the "quality" object of the result, None when not measured.
    quality: dict | None = None

    @property
    def center(self) -> tuple[float, float]:
        if not self.corners:
            return (0.0, 0.0)
        xs = [p[0] for p in self.corners]
        ys = [p[1] for p in self.corners]
        return (sum(xs) / len(xs), sum(ys) / len(ys))

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "format": self.format,
            "corners": [[round(float(x), 1), round(float(y), 1)] for x, y in self.corners],
            "decoder": self.decoder,
            "stage": self.stage,
        }
