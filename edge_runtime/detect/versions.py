"""Model versions side by side, so an update can be refused and the last good model kept.

A models dir holds versions as subfolders `<dir>/<version>/manifest.json` (+ its files) and/or
one flat `<dir>/manifest.json` (the layout shipped today; its version is the one its manifest
names). A subfolder's name is its version: that is what an operator types into `[reader] model`.

Hashing every file here (not only when a backend loads it) lets `edge-runtime models` show
which version is damaged before anyone restarts a line with it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.detect import manifest as mf


@dataclass
class VersionInfo:
    version: str
    path: Path
    files: dict[str, bool] = field(default_factory=dict)  # name -> sha256 matches the manifest
    hashes: dict[str, str | None] = field(default_factory=dict)  # name -> sha256 of the file (None: missing)
    expected: dict[str, str | None] = field(default_factory=dict)  # name -> sha256 in the manifest
    ok: bool = False
    error: str | None = None  # first problem, one line


def version_key(version: str) -> tuple:
    """Sort key: 1.10.0 after 1.9.0 (numbers compare as numbers, other parts as text)."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+_]", version))


def _check(version: str, path: Path) -> VersionInfo:
    info = VersionInfo(version=version, path=path)
    try:
        manifest = json.loads((path / mf.MANIFEST).read_text())
        files = manifest.get("files") or {}
        if not isinstance(files, dict) or not files:
            raise ValueError("lists no files")
    except (OSError, ValueError, AttributeError) as exc:
        info.error = f"{path / mf.MANIFEST}: unreadable model manifest ({exc})"
        return info
    for name, entry in files.items():
        want = entry.get("sha256") if isinstance(entry, dict) else None
        p = path / name
        got = mf.sha256(p) if p.is_file() else None
        info.hashes[name], info.expected[name] = got, want
        info.files[name] = got is not None and got == want
        if info.error is None and got is None:
            info.error = f"{p}: model file missing"
        elif info.error is None and got != want:
            info.error = (f"{p}: sha256 mismatch (manifest {str(want)[:12]}..., file {got[:12]}...): "
                          "the file is corrupt or from another build")
    info.ok = info.error is None
    return info


def _manifest_version(path: Path) -> str | None:
    try:
        v = json.loads((path / mf.MANIFEST).read_text()).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return str(v) if v else None


def list_versions(model_dir: str | Path | None = None) -> list[VersionInfo]:
    """Every version in a models dir, newest first, each with its sha256 check done."""
    root = Path(model_dir) if model_dir is not None else mf.default_model_dir()
    found: dict[str, Path] = {}
    if (root / mf.MANIFEST).is_file():
        found[_manifest_version(root) or "unversioned"] = root
    if root.is_dir():
        for sub in sorted(root.iterdir()):
            if sub.is_dir() and (sub / mf.MANIFEST).is_file():
                found[sub.name] = sub  # an explicit folder wins over a flat manifest of the same version
    return [_check(v, p) for v, p in sorted(found.items(), key=lambda kv: version_key(kv[0]), reverse=True)]


def fingerprint(model_dir: str | Path | None = None) -> tuple:
    """Cheap (stat only) signature of a models dir: a reload re-selects the model when it changed."""
    root = Path(model_dir) if model_dir is not None else mf.default_model_dir()
    out = []
    try:
        paths = [root, *sorted(p for p in root.iterdir() if p.is_dir())]
    except OSError:
        return ()
    for d in paths:
        try:
            for p in sorted(d.iterdir()):
                if p.is_file():
                    st = p.stat()
                    out.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            continue
    return tuple(out)
