"""The collector's TOML config, validated at start like the service's: every problem is one line
naming the file and the key, all of them at once, and the command exits 2.

    group = "plant"               # shared-subscription group: collectors in one group split the load
    topic_prefix = "edge"         # as the devices' mqtt sinks
    client_id = "collector-a"     # stable per instance (persistent session); default from group + host
    shared = true                 # false: a plain subscription, for a single collector (see README:
                                  # mosquitto does not restore shared subscriptions after a restart)

    [broker]
    host = "broker.plant"  port = 8883  keepalive = 30
    username = "collector"  password_env = "COLLECT_MQTT_PASSWORD"
    session_expiry_s = 86400      # how long the broker keeps our session (and our share) while we are away
    receive_maximum = 1000        # unacknowledged messages the broker may have in flight to us
    tls = { ca_file = "/etc/ssl/plant-ca.pem" }   # also cert_file, key_file, insecure

    [db]
    url = "postgresql://collector@db.plant:5432/edge"   # or "sqlite:///var/lib/edge-runtime/results.db"
    password_env = "COLLECT_DB_PASSWORD"
    batch_size = 500              # rows per commit at most
    batch_ms = 50                 # how long a batch waits to fill after its first message
"""

from __future__ import annotations

import math
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from typing import Any


class CollectorConfigError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# key -> (types, default, (min, max) or None). A default of None means "not set".
TOP: dict[str, tuple[tuple[type, ...], Any, tuple[float, float] | None]] = {
    "group": ((str,), "edge-collectors", None),
    "topic_prefix": ((str,), "edge", None),
    "client_id": ((str,), None, None),
    "shared": ((bool,), True, None),
    "log_level": ((str,), "info", None),
}
BROKER: dict[str, tuple[tuple[type, ...], Any, tuple[float, float] | None]] = {
    "host": ((str,), "localhost", None),
    "port": ((int,), 1883, (1, 65535)),
    "keepalive": ((int,), 30, (5, 65535)),
    "username": ((str,), None, None),
    "password_env": ((str,), None, None),
    "session_expiry_s": ((int,), 86400, (0, 4294967295)),
    "receive_maximum": ((int,), 1000, (1, 65535)),
    "tls": ((dict,), None, None),
}
TLS: dict[str, tuple[tuple[type, ...], Any, tuple[float, float] | None]] = {
    "ca_file": ((str,), None, None),
    "cert_file": ((str,), None, None),
    "key_file": ((str,), None, None),
    "insecure": ((bool,), False, None),
}
DB: dict[str, tuple[tuple[type, ...], Any, tuple[float, float] | None]] = {
    "url": ((str,), None, None),
    "password_env": ((str,), None, None),
    "batch_size": ((int,), 500, (1, 10000)),
    "batch_ms": ((int, float), 50, (0, 10000)),
}
LOG_LEVELS = ("debug", "info", "warning", "error")
_TOPIC_BAD = re.compile(r"[+#\x00-\x1f\x7f]")


@dataclass
class CollectorConfig:
    path: str
    group: str
    topic_prefix: str
    client_id: str
    log_level: str
    shared: bool = True
    broker: dict[str, Any] = field(default_factory=dict)
    db: dict[str, Any] = field(default_factory=dict)

    @property
    def broker_password(self) -> str | None:
        env = self.broker.get("password_env")
        return os.environ.get(env) if env else None

    @property
    def db_password(self) -> str | None:
        env = self.db.get("password_env")
        return os.environ.get(env) if env else None


def _type_name(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a table"}
    return " or ".join(names.get(t, t.__name__) for t in types)


def _table(doc: dict, spec: dict, label: str, where: str, problems: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{where}{k}"
        if k not in spec:
            problems.append(f"{label}: {key}: unknown key (known: {', '.join(sorted(spec))})")
            continue
        types, _default, rng = spec[k]
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        if not ok:
            problems.append(f"{label}: {key}: expected {_type_name(types)}, got {v!r:.60}")
            continue
        if isinstance(v, float) and not math.isfinite(v):
            problems.append(f"{label}: {key}: must be a finite number, got {v!r}")
            continue
        if rng is not None and isinstance(v, (int, float)) and not (rng[0] <= v <= rng[1]):
            problems.append(f"{label}: {key}: must be {rng[0]:g}..{rng[1]:g}, got {v!r}")
            continue
        out[k] = v
    for k, (_types, default, _rng) in spec.items():
        out.setdefault(k, default)
    return out


def load(path: str, need_db: bool = True) -> CollectorConfig:
    """Read and validate `path`. Raises CollectorConfigError with one line per problem.
    need_db=False: [db] may be absent (`models publish` only talks to the broker)."""
    label = str(path)
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise CollectorConfigError([f"{label}: cannot read: {e.strerror or e}"]) from None
    except tomllib.TOMLDecodeError as e:
        raise CollectorConfigError([f"{label}: not valid TOML: {e}"]) from None
    return validate(doc, label, need_db)


def validate(doc: dict, label: str = "collector config", need_db: bool = True) -> CollectorConfig:
    problems: list[str] = []
    tables = {"broker": BROKER, "db": DB}
    top_doc = {k: v for k, v in doc.items() if k not in tables}
    top = _table(top_doc, TOP, label, "", problems)
    parts: dict[str, dict] = {}
    for name, spec in tables.items():
        sub = doc.get(name, {})
        if not isinstance(sub, dict):
            problems.append(f"{label}: {name}: expected a table [{name}], got {sub!r:.60}")
            sub = {}
        parts[name] = _table(sub, spec, label, f"{name}.", problems)
    broker, db = parts["broker"], parts["db"]
    if isinstance(broker.get("tls"), dict):
        broker["tls"] = _table(broker["tls"], TLS, label, "broker.tls.", problems)
        for k in ("ca_file", "cert_file", "key_file"):
            p = broker["tls"].get(k)
            if p is not None and not os.path.isfile(p):
                problems.append(f"{label}: broker.tls.{k}: no such file {p!r}")
        if bool(broker["tls"].get("cert_file")) != bool(broker["tls"].get("key_file")):
            problems.append(f"{label}: broker.tls: cert_file and key_file go together")
    for key in ("group", "topic_prefix"):
        v = top.get(key)
        if isinstance(v, str) and (not v or _TOPIC_BAD.search(v) or (key == "group" and "/" in v)):
            problems.append(f"{label}: {key}: must be non-empty, without + # / or control characters, got {v!r:.60}")
    if top.get("log_level") not in LOG_LEVELS:
        problems.append(f"{label}: log_level: expected one of {', '.join(LOG_LEVELS)}, got {top.get('log_level')!r:.60}")
    for where, table in (("broker", broker), ("db", db)):
        env = table.get("password_env")
        if env is not None and env not in os.environ:
            problems.append(f"{label}: {where}.password_env: environment variable {env!r} is not set")
    url = db.get("url")
    if url is None:
        if need_db and (not isinstance(doc.get("db"), dict) or "url" not in doc["db"]):
            problems.append(f"{label}: db.url: required (sqlite:///path/results.db or postgresql://user@host/db)")
    else:
        from edge_runtime.fleet.db import url_problem

        if problem := url_problem(url):
            problems.append(f"{label}: db.url: {problem}")
    if problems:
        raise CollectorConfigError(problems)
    client_id = top["client_id"] or f"edge-collect-{top['group']}-{socket.gethostname()}"
    return CollectorConfig(path=label, group=top["group"], topic_prefix=top["topic_prefix"], client_id=client_id,
                           log_level=top["log_level"], shared=top["shared"], broker=broker, db=db)
