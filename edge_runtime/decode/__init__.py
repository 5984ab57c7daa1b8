"""Decoder backends: one file each, chosen by name.

A backend whose library is missing (no libzbar0, an old OpenCV) is reported once at
start-up and the reader carries on with the others, so a PDA without ZBar still reads.
"""

from __future__ import annotations

import importlib
import logging

from edge_runtime.decode.base import Decoder

log = logging.getLogger(__name__)

BACKENDS = {
    "zxing": "edge_runtime.decode.zxing:ZxingDecoder",
    "opencv": "edge_runtime.decode.opencv:OpenCVDecoder",
    "zbar": "edge_runtime.decode.zbar:ZbarDecoder",
}

_reported: set[str] = set()


def load(name: str) -> Decoder | None:
    """Instantiate backend `name`, or None (logged once per process) if its library is missing."""
    if name not in BACKENDS:
        raise ValueError(f"unknown decoder {name!r}; choose from {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)()
    except (ImportError, OSError, AttributeError) as exc:
        if name not in _reported:
            _reported.add(name)
            log.warning("decoder %s unavailable (%s); continuing without it", name, str(exc).splitlines()[0])
        return None


__all__ = ["Decoder", "BACKENDS", "load"]
