"""Frame sources: one file per kind, chosen by `kind` in the [source] table of the config.

    [source]
    kind = "camera"      # camera | video | folder | rtsp | gstreamer | synthetic
    device = 0

Each kind's class carries DEFAULTS (default values, whose types are the option types),
KEYS (allowed option names), REQUIRED and TYPES (allowed types per key, where a key takes
more than one shape, e.g. camera device = 0 or "/dev/v4l/by-id/..."). The config layer
validates with `spec(kind)`; `open_source(table)` builds and opens the source.
"""

from __future__ import annotations

import importlib

from edge_runtime.capture.base import Frame, Source, SourceError, SourceTimeout

KINDS = {
    "camera": "edge_runtime.capture.camera:CameraSource",
    "video": "edge_runtime.capture.video:VideoSource",
    "folder": "edge_runtime.capture.folder:FolderSource",
    "rtsp": "edge_runtime.capture.stream:RtspSource",
    "gstreamer": "edge_runtime.capture.stream:GStreamerSource",
    "synthetic": "edge_runtime.capture.synthetic:SyntheticSource",
}


def source_class(kind: str) -> type:
    if kind not in KINDS:
        raise SourceError(f"unknown source kind {kind!r}; choose from {', '.join(KINDS)}")
    module, cls = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


def spec(kind: str) -> tuple[dict, set[str], set[str], dict[str, tuple[type, ...]]]:
    """(DEFAULTS, KEYS, REQUIRED, TYPES) of one kind, for config validation."""
    cls = source_class(kind)
    return cls.DEFAULTS, cls.KEYS, cls.REQUIRED, cls.TYPES


def check_options(kind: str, options: dict) -> dict:
    """Options (without "kind") with defaults applied; SourceError naming the first bad key.

    The config layer does its own validation with file/line context; this is the backstop
    for callers that build options in code."""
    defaults, keys, required, types = spec(kind)
    for key in options:
        if key not in keys:
            raise SourceError(f"[source] kind={kind!r}: unknown key {key!r}; allowed: {', '.join(sorted(keys))}")
    for key in sorted(required):
        if options.get(key) in (None, ""):
            raise SourceError(f"[source] kind={kind!r}: missing required key {key!r}")
    for key, value in options.items():
        allowed = types[key]
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            names = " or ".join("none" if t is type(None) else t.__name__ for t in allowed)
            raise SourceError(f"[source] {key} = {value!r}: must be {names}")
    # The kind's declared RANGES, the same the config enforces (NaN fails every comparison).
    for key, (lo, hi) in getattr(source_class(kind), "RANGES", {}).items():
        value = options.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not lo <= value <= hi:
            raise SourceError(f"{kind} source: option {key}={value!r}: must be {lo:g}..{hi:g}")
    return {**defaults, **options}


def open_source(options: dict) -> Source:
    """Build and open the source described by a [source] table (including "kind";
    "synthetic" when absent). Raises SourceError with one line when it cannot start."""
    options = dict(options)
    kind = options.pop("kind", "synthetic")
    cls = source_class(kind)
    source = cls(check_options(kind, options))
    source.open()
    return source


__all__ = ["Frame", "Source", "SourceError", "SourceTimeout", "KINDS", "source_class", "spec", "check_options", "open_source"]
