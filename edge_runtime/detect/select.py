"""Which model version runs: the configured one if it loads, matches its sha256 and passes the
self-test; otherwise the one already running (on reload) or the newest version that passes.

Why not refuse to start instead: a model update copied to a fleet of boards can be half-copied or
from a wrong build; the line must keep reading with the last good model, and say so (log line,
status "model_fallback"), rather than stop or read worse.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edge_runtime.detect import Choice, DetectorUnavailable, _load_backend
from edge_runtime.detect import manifest as mf
from edge_runtime.detect.base import thread_count
from edge_runtime.detect.selftest import self_test
from edge_runtime.detect.versions import VersionInfo, list_versions

log = logging.getLogger("edge_runtime.detect")


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def try_version(name: str, info: VersionInfo, run_self_test: bool = True, **options):
    """The detector of one version after its sha256 check and self-test, or DetectorUnavailable."""
    if not info.ok:
        raise DetectorUnavailable(info.error or "failed its checks")
    det = _load_backend(name, model_dir=info.path, **options)
    if run_self_test:
        self_test(det)
    det.version = info.version
    return det


def choose(name: str, *, model: str = "", keep=None, model_dir: str | Path | None = None,
           run_self_test: bool = True, **options) -> Choice:
    root = Path(model_dir) if model_dir is not None else mf.default_model_dir()
    versions = list_versions(root)
    if not versions:  # no manifest anywhere: the plain single-folder path and its messages
        try:
            return Choice(_load_backend(name, model_dir=model_dir, **options))  # no model: nothing to self-test
        except DetectorUnavailable as exc:
            if name == "auto":
                log.info("no detector model available (%s); reading whole frames only", exc)
                return Choice(None)
            raise
    options["run_self_test"] = run_self_test
    by_version = {v.version: v for v in versions}
    refused: list[tuple[str, str]] = []
    if model and model not in by_version:
        refused.append((model, f"not in {root} (have {', '.join(by_version)})"))
    wanted = ([by_version[model]] if model in by_version else []) if model else versions
    det = _pick(name, wanted, keep, refused, options)
    if det is None and refused:  # the wanted version is refused: the running one, else the newest that passes
        if keep is not None:
            det = keep
        else:
            tried = {v for v, _ in refused}
            det = _pick(name, [v for v in versions if v.version not in tried], None, refused, options)
    chosen = getattr(det, "version", None)
    fallback = "; ".join(f"model {v} refused: {r}" for v, r in refused) or None
    for v, r in refused:
        what = f"keeping {chosen}" if det is keep and det is not None else (f"using {chosen}" if det is not None else
                                                                              "no model passes")
        log.warning("model %s refused: %s; %s", v, r, what,
                    extra={"fields": {"event": "model_refused", "model": v, "active": chosen}})
    if det is None:
        if name == "auto":
            log.warning("no detector model passes its checks; reading whole frames only")
            return Choice(None, None, fallback)
        raise DetectorUnavailable(fallback or "no model version found")
    if det is not keep:
        log.info("detector model %s (%s) loaded and self-tested", chosen, getattr(det, "fmt", name),
                 extra={"fields": {"event": "model_loaded", "model": chosen}})
    return Choice(det, chosen, fallback)


def _pick(name: str, candidates: list[VersionInfo], keep, refused: list, options: dict):
    for info in candidates:
        if (keep is not None and info.ok and getattr(keep, "version", None) == info.version
                and Path(getattr(keep, "model_dir", "")) == info.path and name in ("auto", getattr(keep, "fmt", ""))
                and getattr(keep, "threads", 1) == thread_count(options.get("threads", 1))):
            return keep  # already running and tested: no second copy in memory
        try:
            return try_version(name, info, **options)
        except (DetectorUnavailable, ImportError, OSError) as exc:
            refused.append((info.version, _first_line(exc)))
    return None
