"""What every decoder backend offers: one narrow method on a grayscale image."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from edge_runtime.code import Code


class Decoder(Protocol):
    name: str

    def decode(self, gray: np.ndarray, *, fast: bool = False) -> list[Code]:
        """All QR codes in `gray` (uint8, 2-D) with corners in `gray`'s coordinates.

        `fast` asks for the backend's cheapest mode (no internal rotations/downscales);
        the reader uses it on small crops and retries, where the work is already focused.
        """
        ...
