"""`edge-runtime models`: the model versions on this device, their file hashes, and which one runs.

An operator who copied a new model over SSH needs to see, before a restart, whether the files
arrived intact (sha256 OK/MISMATCH) and which version the runtime will actually use with this
config - the same choice the service makes, self-test included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from pathlib import Path

from edge_runtime import detect
from edge_runtime.detect import manifest as mf
from edge_runtime.detect.versions import VersionInfo, list_versions


def add_parser(sub) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    p = sub.add_parser("models", help="list detector model versions, their hashes and the active one",
                       description="List the model versions in the models dir (sha256 of each file, OK or "
                       "MISMATCH) and which one is active for a config (sha256 check and self-test, as the "
                       "service does at start and on reload).")
    p.add_argument("--dir", metavar="DIR", help=f"models dir (default: ${mf.ENV}, else the shipped models)")
    p.add_argument("--config", "-c", metavar="FILE", help="config whose [reader] detector/model choose the active one")
    p.add_argument("--test", action="store_true", help="also run every version's self-test")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=run)
    from edge_runtime.cli.model_rollout import add_actions

    add_actions(p)  # keygen, publish, promote: the rollout over MQTT


@contextlib.contextmanager
def _quiet_detect_log():
    """The choice's log lines ("model 1.1.0 refused ...") are printed in the listing instead."""
    lg = logging.getLogger("edge_runtime.detect")
    saved = lg.propagate, lg.handlers[:]
    lg.propagate, lg.handlers = False, [logging.NullHandler()]
    try:
        yield
    finally:
        lg.propagate, lg.handlers = saved


def _self_test(name: str, info: VersionInfo) -> dict:
    from edge_runtime.detect import _load_backend
    from edge_runtime.detect.selftest import count_found

    if not info.ok:
        return {"passed": False, "result": "not run: files fail their sha256 check"}
    try:
        found, total = count_found(_load_backend(name, model_dir=info.path))
    except (detect.DetectorUnavailable, ImportError, OSError) as exc:
        return {"passed": False, "result": f"does not load: {str(exc).splitlines()[0]}"}
    return {"passed": found == total, "result": f"{'passed' if found == total else 'FAILED'}: found {found} of {total} codes"}


def run(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError

    name, model = "auto", ""
    if args.config:
        from edge_runtime import config as config_mod

        try:
            cfg = config_mod.load(args.config)
        except config_mod.ConfigError as exc:
            raise UserError(exc.problems[0]) from None
        name, model = cfg["reader"]["detector"], cfg["reader"]["model"]
    root = Path(args.dir) if args.dir else mf.default_model_dir()
    if not root.is_dir():
        raise UserError(f"{root}: models dir not found" + ("" if args.dir else f" (set {mf.ENV} or use --dir)"))
    versions = list_versions(root)
    active = fallback = backend = None
    if name != "none" and versions:
        with _quiet_detect_log():
            try:
                choice = detect.choose(name, model=model, model_dir=root)
                active, fallback = choice.version, choice.fallback
                backend = getattr(choice.detector, "fmt", None)
            except detect.DetectorUnavailable as exc:
                fallback = str(exc).splitlines()[0]
    tests = {v.version: _self_test(name if name != "none" else "auto", v) for v in versions} if args.test else {}
    if args.json:
        print(json.dumps({
            "dir": str(root), "detector": name, "backend": backend, "model": model, "active": active, "fallback": fallback,
            "versions": [{"version": v.version, "path": str(v.path), "ok": v.ok, "error": v.error,
                          "active": v.version == active,
                          "files": {f: {"sha256": v.hashes[f], "manifest_sha256": v.expected[f], "ok": v.files[f]}
                                    for f in v.files},
                          **({"self_test": tests[v.version]} if args.test else {})} for v in versions]}, indent=1))
        return 0
    wanted = f'model "{model}"' if model else "model \"\" (newest that passes)"
    print(f"models dir: {root}")
    runs = f"detector {name}" + (f" -> {backend}" if backend and backend != name else "")
    print(f"active: {active or 'none (whole-frame reading)'}  [{runs}, {wanted}]")
    if fallback:
        print(f"fallback: {fallback}")
    if not versions:
        print("no model versions found")
    for v in versions:
        mark = "*" if v.version == active else " "
        line = f"{mark} {v.version:<10} {'OK' if v.ok else 'MISMATCH' if v.hashes else 'BROKEN':<9} {v.path}"
        if args.test:
            line += f"  self-test {tests[v.version]['result']}"
        print(line)
        if v.error and not v.hashes:
            print(f"      {v.error}")
        for f, ok in v.files.items():
            got = v.hashes[f] or "(missing)"
            print(f"      {f:<30} {got:<64}  {'OK' if ok else 'MISMATCH'}")
    return 0
