"""Why a detected code was not read: so maintenance knows whether to look at the camera
or at the printer.

API::

    reason_for(gray, quad) -> str   # "detected_not_decoded" | "format_unreadable" | "too_damaged"

`gray`: uint8 frame or crop (gray, or BGR: converted); `quad`: the unread label's four corners in `gray`'s
coordinates (the detector's, any start corner). It runs the grid decoder's own steps on
the quad: sample the module grid (`qr_sample`), read the format information, decode
with Reed–Solomon erasures (`qr_grid`):

  * no finder structure, or a grid the decoder reads after all: "detected_not_decoded"
    (the reader's problem or the view's: blur, too small, a late frame, not a QR code);
  * no candidate grid whose format information (error level + mask, two BCH-protected
    copies) can be recovered: "format_unreadable";
  * format recovered but the codewords are beyond error correction: "too_damaged".

"nothing_detected" (a trigger window that closed with no detection at all) needs no image:
`results.noread_result` gives it when a noread has no corners. Pure function; a few ms
per quad (it tries up to 3 versions), so call it once per unread label, not per frame.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_runtime.decode.qr_grid import decode_grid, read_format
from edge_runtime.decode.qr_sample import iter_grids


def reason_for(gray: np.ndarray, quad) -> str:
    """The noread reason for the unread code at `quad` (see the module docstring)."""
    if gray is not None and getattr(gray, "ndim", 0) == 3:
        gray = cv2.cvtColor(gray, cv2.COLOR_BGR2GRAY)  # the loop's frames may be BGR
    if gray is None or getattr(gray, "ndim", 0) != 2 or gray.size == 0:
        return "detected_not_decoded"
    q = np.asarray(quad, np.float32).reshape(-1, 2)
    if q.shape != (4, 2) or not np.all(np.isfinite(q)):
        return "detected_not_decoded"
    img = np.ascontiguousarray(gray, dtype=np.uint8)
    format_seen = sampled = False
    for s in iter_grids(img, q, max_versions=3):
        sampled = True
        if not read_format(s.modules, s.erasures > 0):
            continue
        format_seen = True
        if decode_grid(s.modules, s.erasures) is not None:
            # Readable from this image: the print is fine, the reader missed it.
            return "detected_not_decoded"
    if not sampled:
        return "detected_not_decoded"  # no finder structure: nothing to blame the print for
    return "too_damaged" if format_seen else "format_unreadable"
