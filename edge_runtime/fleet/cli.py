"""`edge-runtime collect` and `edge-runtime fleet` (registered in edge_runtime/cli/__init__.py)."""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers) -> None:  # noqa: ANN001 - argparse's private _SubParsersAction
    c = subparsers.add_parser(
        "collect",
        help="store every result from MQTT in SQLite or PostgreSQL (shared subscription, exactly once)",
        description="Subscribe to the devices' results with an MQTT 5 shared subscription and insert them into "
        "the database (primary key device_id, id; duplicates ignored); each message is acknowledged only after "
        "its batch was committed. SIGTERM/SIGINT stop cleanly.",
    )
    c.add_argument("--config", "-c", metavar="FILE", help="collector TOML, required (see README, The collector)")
    c.set_defaults(func=cmd_collect)
    f = subparsers.add_parser(
        "fleet",
        help="per-device state, last seen, results and read rate from the collector's database",
        description="One line per device: online/offline (retained status, Last Will), last seen, results, "
        "reads and noreads over the last hour, read rate, model version, outbox depth.",
    )
    f.add_argument("--db", metavar="URL", default=os.environ.get("EDGE_FLEET_DB"),
                   help="sqlite:///path or postgresql://user@host:port/db (default: $EDGE_FLEET_DB)")
    f.add_argument("--json", action="store_true", help="a JSON array, one object per device")
    f.add_argument("--stale-s", type=float, default=120.0, metavar="S",
                   help="an online device not heard of for S seconds is shown as stale (default 120)")
    f.set_defaults(func=cmd_fleet)


def cmd_collect(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.fleet import collector
    from edge_runtime.fleet.config import CollectorConfigError, load
    from edge_runtime.fleet.db import DbError
    from edge_runtime.service import logs

    if not args.config:
        raise UserError("collect: --config FILE is required (see README, The collector)")
    try:
        cfg = load(args.config)
    except CollectorConfigError as e:
        for line in e.problems:
            print(line, file=sys.stderr)
        return 2
    logs.setup(cfg.log_level, "text", sys.stderr)
    try:
        return collector.run(cfg)
    except DbError as e:
        raise UserError(str(e)) from None


def cmd_fleet(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.fleet.db import DbError, open_db
    from edge_runtime.fleet.view import fleet, render, render_json

    if not args.db:
        raise UserError("fleet: --db URL is required (or set EDGE_FLEET_DB)")
    if args.db.startswith("sqlite://") and not os.path.exists(args.db[len("sqlite://"):]):
        raise UserError(f"fleet: --db {args.db}: no such database file (has a collector written it yet?)")
    try:
        db = open_db(args.db)
        try:
            rows = fleet(db, stale_s=args.stale_s)
        finally:
            db.close()
    except DbError as e:
        raise UserError(str(e)) from None
    sys.stdout.write(render_json(rows) if args.json else render(rows))
    return 0
