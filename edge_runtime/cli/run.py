"""`edge-runtime run` and `edge-runtime check-config`."""

from __future__ import annotations

import argparse
import atexit
import signal
import sys

from edge_runtime import config as config_mod
from edge_runtime.config import ConfigError


def add_parser(subparsers) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    run = subparsers.add_parser(
        "run",
        help="run the service (without --config: the embedded demo, a simulated conveyor to stdout)",
        description="Read codes from the configured source and deliver every result to the configured sinks. "
        "SIGTERM/SIGINT stop cleanly, SIGHUP reloads the config, SIGUSR1 toggles a signal trigger.",
    )
    run.add_argument("--config", "-c", metavar="FILE", help="TOML config file (see examples/config.toml)")
    run.set_defaults(func=cmd_run)
    check = subparsers.add_parser(
        "check-config",
        help="validate a config file and print the effective config",
        description="Exit 0 and print the effective config (defaults filled in, secrets masked), "
        "or print one line per problem and exit 2.",
    )
    check.add_argument("file", metavar="FILE", nargs="?", help="TOML config file (default: the embedded demo)")
    check.set_defaults(func=cmd_check_config)


def _load(path: str | None) -> config_mod.Config | None:
    try:
        return config_mod.load(path)
    except ConfigError as exc:
        for line in exc.problems:
            print(line, file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args.file)
    if cfg is None:
        return 2
    sys.stdout.write(cfg.to_toml())
    for note in cfg.notes:
        print(f"# note: {note}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.service import logs
    from edge_runtime.service.loop import Service, ServiceError, log_stream

    cfg = _load(args.config)
    if cfg is None:
        return 2
    logs.setup(cfg["log"]["level"], cfg["log"]["format"], log_stream(cfg))
    service = Service(cfg, owns_logging=True)
    try:
        return service.run(restore_signals=False)
    except ServiceError as exc:
        raise UserError(str(exc)) from None
    finally:
        # The service has stopped; a SIGTERM now (systemd, an operator pressing again) must
        # not kill the process by the signal while it exits. Python puts the default action
        # back for its own handlers while the interpreter shuts down, after the atexit
        # functions: ignoring the signals there keeps them ignored to the end, and leaves
        # an in-process caller (tests) with its own handlers until then.
        atexit.register(_ignore_stop_signals)


def _ignore_stop_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
