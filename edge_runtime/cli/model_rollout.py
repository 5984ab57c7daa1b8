"""`edge-runtime models keygen | publish | promote`: the plant side of the model rollout
(edge_runtime/rollout). publish and promote take the collector's TOML (--config) for [broker],
topic_prefix and, for promote, [db]."""

from __future__ import annotations

import argparse
import sys


def add_actions(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    k = sub.add_parser("keygen", help="make an Ed25519 signing key; prints the public key for the devices",
                       description="Write a new private key (PEM, mode 0600, never over an existing file) and "
                       "print the public key to put in each device's [model] public_key.")
    k.add_argument("key", metavar="KEY_FILE")
    k.set_defaults(func=cmd_keygen)
    pub = sub.add_parser("publish", help="sign a model version and publish it on a channel (retained)",
                         description="Check a model version folder (manifest, sha256 of every file), sign it and "
                         "publish it as the retained message of <topic_prefix>/fleet/model/<channel>. Devices that "
                         "follow that channel verify, self-test and switch to it.")
    pub.add_argument("dir", metavar="DIR", help="a model version folder (manifest.json and its files)")
    pub.add_argument("--channel", help="canary, stable, ... (required)")
    _plant_args(pub)
    pub.set_defaults(func=cmd_publish)
    pro = sub.add_parser("promote", help="publish the canary's model on stable unless it reads worse",
                         description="Compare the read rates of the devices running the canary's model with the "
                         "devices on the target channel (collector database); refuse (exit 1) when the canary's "
                         "is lower, else re-sign the bundle for the target channel and publish it.")
    pro.add_argument("--from", dest="src", default="canary", help="channel to promote from (default canary)")
    pro.add_argument("--to", dest="dst", default="stable", help="channel to promote to (default stable)")
    pro.add_argument("--db", metavar="URL", help="collector database (default: [db] url of --config)")
    pro.add_argument("--hours", type=float, default=1.0, help="results of the last H hours (default 1)")
    pro.add_argument("--min-items", type=int, default=100, help="canary items needed at least (default 100)")
    pro.add_argument("--tolerance", type=float, default=0.0,
                     help="points the canary may read below the target and still be promoted (default 0)")
    _plant_args(pro)
    pro.set_defaults(func=cmd_promote)


def _plant_args(p: argparse.ArgumentParser) -> None:
    # Checked in the commands, not by argparse: a missing one is one line naming it (exit 2).
    p.add_argument("--key", metavar="KEY_FILE", help="the signing key (models keygen), required")
    p.add_argument("--config", "-c", metavar="FILE",
                   help="the collector's TOML: [broker], topic_prefix (and [db] for promote), required")


def _require(args: argparse.Namespace, *names: str) -> None:
    from edge_runtime.cli import UserError

    missing = [f"--{n}" for n in names if not getattr(args, n, None)]
    if missing:
        raise UserError(f"models {args.action}: {', '.join(missing)} required")


def _cfg(path: str, need_db: bool = False):  # noqa: ANN202
    from edge_runtime.cli import UserError
    from edge_runtime.fleet.config import CollectorConfigError, load

    try:
        return load(path, need_db=need_db)
    except CollectorConfigError as e:
        raise UserError(e.problems[0]) from None


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.rollout import keys

    try:
        public = keys.generate(args.key)
    except keys.KeyProblem as e:
        raise UserError(str(e)) from None
    print(f"private key written to {args.key} (keep it on the publishing machine)")
    print("put this in each device's config:")
    print(f'[model]\npublic_key = "{public}"')
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.rollout import bundle, plant

    _require(args, "channel", "key", "config")
    cfg = _cfg(args.config)
    try:
        key = plant.load_key(args.key)
        manifest, files = bundle.read_model_dir(args.dir)
        message = bundle.pack(manifest, files, args.channel, key)
        plant.publish(cfg, args.channel, message)
    except (bundle.Refused, plant.PlantError) as e:
        raise UserError(str(e)) from None
    print(f"published model {manifest['version']} on {bundle.topic(cfg.topic_prefix, args.channel)} "
          f"({len(message)} bytes, retained)")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from edge_runtime.cli import UserError
    from edge_runtime.fleet.db import DbError, open_db
    from edge_runtime.rollout import bundle, plant

    _require(args, "key", "config")
    cfg = _cfg(args.config, need_db=not args.db)
    for ch in (args.src, args.dst):
        if problem := bundle.channel_problem(ch):
            raise UserError(f"channel {ch!r} {problem}")
    url = args.db or cfg.db.get("url")
    if not url:
        raise UserError("promote: --db URL or [db] url in --config is required")
    try:
        key = plant.load_key(args.key)
        db = open_db(url, cfg.db_password if not args.db else None)
    except (plant.PlantError, DbError) as e:
        raise UserError(str(e)) from None
    try:
        line = plant.promote(cfg, db, key, args.src, args.dst, hours=args.hours, min_items=args.min_items,
                             tolerance=args.tolerance)
    except plant.PlantError as e:
        print(f"edge-runtime: {e}", file=sys.stderr)
        return 1
    except DbError as e:
        raise UserError(str(e)) from None
    finally:
        db.close()
    print(line)
    return 0
