"""The grid decoder backend: reads damaged QR codes the other decoders give up on.

It samples the module grid from the code's corners (`qr_sample`), marks modules it cannot
trust as erasures, and decodes with Reed–Solomon erasure correction (`qr_grid`). It is
meant as one more attempt on a detected ROI, after zxing-cpp and OpenCV::

    codes = GridDecoder().decode(crop, quad=corners_in_crop)

`quad`: the code's four corners (x, y) in `gray`'s coordinates, clockwise (any start
corner), a few px off is fine. Without `quad` it asks OpenCV's QR detector for corners
(detection only; OpenCV's own decoding is the `opencv` backend's job) and returns [] if
there are none. Every read is verified (zero syndrome, valid padding, misdecode margin);
`Code.ec` carries {"corrected", "erased", "capacity"} in codewords for quality grading.
"""

from __future__ import annotations

import time

import cv2
import numpy as np

from edge_runtime.code import Code
from edge_runtime.decode.qr_grid import decode_grid
from edge_runtime.decode.qr_sample import iter_grids


class GridDecoder:
    name = "grid"

    def __init__(self) -> None:
        self._det = None

    def _detect(self, gray: np.ndarray) -> list[np.ndarray]:
        if self._det is None:
            self._det = cv2.QRCodeDetector()
        try:
            ok, pts = self._det.detect(gray)
        except cv2.error:
            return []
        if not ok or pts is None:
            return []
        return [np.asarray(pts, np.float32).reshape(-1, 4, 2)[0]]

    def decode(self, gray: np.ndarray, *, fast: bool = False, quad=None) -> list[Code]:
        """Verified reads of the code at `quad` (or at OpenCV's detection); [] if none.

        `fast` tries only the most likely version (the ROI retries of the reader are cheap).
        """
        if gray is None or gray.ndim != 2 or gray.size == 0:
            return []
        t0 = time.perf_counter()
        img = np.ascontiguousarray(gray, dtype=np.uint8)
        quads = [np.asarray(quad, np.float32).reshape(4, 2)] if quad is not None else self._detect(img)
        for q in quads:
            if not np.all(np.isfinite(q)):
                continue
            for s in iter_grids(img, q, max_versions=1 if fast else 3):
                r = decode_grid(s.modules, s.erasures)
                if r is None:
                    continue
                return [
                    Code(
                        text=r.text, raw=r.raw, format="QRCode", corners=s.corners, decoder=self.name, stage="roi",
                        elapsed_ms=(time.perf_counter() - t0) * 1000.0, ec=r.ec,
                    )
                ]
        return []
