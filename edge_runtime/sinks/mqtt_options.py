"""Options of the mqtt sink: defaults, the set of known keys, and resolution into one dict.

The config layer validates types and rejects keys not in KEYS (and, inside `tls`, not in
TLS_KEYS); `resolve_options` repeats the checks that need values (ranges, topics, the
password env var) so that a sink built from code gets the same one-line errors.
"""

from __future__ import annotations

import os
from typing import Any

from edge_runtime.outbox import POLICIES

DEFAULTS: dict[str, Any] = {
    "host": "localhost",
    "port": 1883,
    "protocol": "3.1.1",          # "3.1.1" or "5"
    "tls": None,                  # table {ca_file, cert_file, key_file, insecure}; absent = plain TCP
    "username": None,
    "password": None,
    "password_env": None,         # name of an env var holding the password (keeps secrets out of the file)
    "client_id": None,            # None -> f"edge-runtime-{device_id}"
    "topic_prefix": "edge",
    "qos": 1,                     # 0, 1 or 2; 0 = at-most-once (leaves the outbox when written to the socket)
    "keepalive": 30,              # seconds
    "outbox": None,               # None -> f"/var/lib/edge-runtime/outbox-{name}.sqlite"
    "outbox_max_mb": 64,          # payload bytes kept while the broker is away; 0 = unlimited
    "outbox_policy": "drop_oldest",  # or "drop_newest"
    "status_interval_s": 10,
    "max_inflight": 20,           # unacknowledged results on the wire at once
}
KEYS: frozenset[str] = frozenset(DEFAULTS)

# Types for the config layer where the default (None) does not tell; the others follow their
# default's type. protocol also takes a bare number (protocol = 5) as people write it in TOML.
TYPES: dict[str, tuple[type, ...]] = {
    "protocol": (str, int, float),
    "tls": (dict,),
    "username": (str,),
    "password": (str,),
    "password_env": (str,),
    "client_id": (str,),
    "outbox": (str,),
}
_STR_OR_NONE = ("username", "password", "password_env", "client_id", "outbox")
# Inclusive (lo, hi) per numeric key; the config layer enforces them for the file, the loop
# in resolve_options for a sink built from code. MQTT carries keepalive and receive-maximum
# in 16 bits; max_inflight = inf crashed check-config, a NaN interval never fired.
RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "protocol": (3, 311),  # the bare numbers people write: 5, 5.0, 311 (checked against PROTOCOLS)
    "qos": (0, 2),
    "keepalive": (5, 65535),
    "outbox_max_mb": (0, 1_000_000),  # 0 = unlimited
    "status_interval_s": (0.1, 86400),
    "max_inflight": (1, 65535),
}
TEXT: dict[str, str] = {"host": "host"}  # the other strings: no control/bidi chars, <= 4096

TLS_DEFAULTS: dict[str, Any] = {
    "ca_file": None,      # None -> the system CA store
    "cert_file": None,    # client certificate (mutual TLS), with key_file
    "key_file": None,
    "insecure": False,    # true skips the broker *hostname* check only; the chain is still verified
}
TLS_KEYS: frozenset[str] = frozenset(TLS_DEFAULTS)
TLS_TYPES: dict[str, tuple[type, ...]] = {"ca_file": (str,), "cert_file": (str,), "key_file": (str,), "insecure": (bool,)}

PROTOCOLS = {"3.1.1": "3.1.1", "311": "3.1.1", "5": "5", "5.0": "5"}
DEFAULT_OUTBOX = "/var/lib/edge-runtime/outbox-{name}.sqlite"


def _bad_topic_part(s: str) -> bool:
    return not s or any(c in s for c in "+#\x00")


def resolve_options(name: str, device_id: str, options: dict | None) -> dict[str, Any]:
    """Merge `options` over DEFAULTS and check values. Raises ValueError with one line naming
    the sink and the key, e.g. "mqtt sink 'plant': unknown option 'prot' (known: ...)"."""
    where = f"mqtt sink {name!r}"
    options = dict(options or {})
    unknown = sorted(set(options) - KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown option {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    o = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    for key in _STR_OR_NONE:
        if o[key] is not None and not isinstance(o[key], str):
            raise ValueError(f"{where}: {key} must be a string, got {o[key]!r}")
    if o["tls"] is not None and not isinstance(o["tls"], dict):
        raise ValueError(f"{where}: tls must be a table {{ca_file, cert_file, key_file, insecure}}, got {o['tls']!r}")

    proto = PROTOCOLS.get(str(o["protocol"]))
    if proto is None:
        raise ValueError(f"{where}: protocol must be \"3.1.1\" or \"5\", got {o['protocol']!r}")
    o["protocol"] = proto
    if o["qos"] not in (0, 1, 2) or isinstance(o["qos"], bool):
        raise ValueError(f"{where}: qos must be 0, 1 or 2, got {o['qos']!r}")
    if o["outbox_policy"] not in POLICIES:
        raise ValueError(f"{where}: outbox_policy must be one of {', '.join(POLICIES)}, got {o['outbox_policy']!r}")
    if not (isinstance(o["port"], int) and 0 < o["port"] < 65536):
        raise ValueError(f"{where}: port must be 1..65535, got {o['port']!r}")
    for key, (lo, hi) in RANGES.items():
        if key != "protocol" and (not isinstance(o[key], (int, float)) or isinstance(o[key], bool)
                                  or not lo <= o[key] <= hi):  # NaN fails the comparison too
            raise ValueError(f"{where}: {key} must be a number in {lo:g}..{hi:g}, got {o[key]!r}")
    o["max_inflight"] = int(o["max_inflight"])
    o["keepalive"] = int(o["keepalive"])

    # Topics are built only from config, never from a payload; a wildcard or NUL here would
    # make the broker reject every publish, a "/" in device_id would change the topic tree.
    o["topic_prefix"] = str(o["topic_prefix"]).rstrip("/")  # "edge/" means "edge", not "edge//dev"
    if _bad_topic_part(o["topic_prefix"]):
        raise ValueError(f"{where}: topic_prefix must be non-empty without '+', '#' or NUL, got {o['topic_prefix']!r}")
    if _bad_topic_part(device_id) or "/" in device_id:
        raise ValueError(f"{where}: device_id must be non-empty without '/', '+', '#' or NUL, got {device_id!r}")

    if o["password_env"]:
        var = o["password_env"]
        if var not in os.environ:
            raise ValueError(f"{where}: password_env names ${var}, which is not set in the service environment")
        o["password"] = os.environ[var]
    if o["password"] is not None and not o["username"]:
        raise ValueError(f"{where}: a password needs a username")

    if o["tls"] is not None:
        tls = dict(o["tls"])
        unknown = sorted(set(tls) - TLS_KEYS)
        if unknown:
            raise ValueError(f"{where}: unknown option tls.{unknown[0]} (known: {', '.join(sorted(TLS_KEYS))})")
        tls = {**TLS_DEFAULTS, **{k: v for k, v in tls.items() if v is not None}}
        for key in ("ca_file", "cert_file", "key_file"):
            if tls[key] is not None and not isinstance(tls[key], str):
                raise ValueError(f"{where}: tls.{key} must be a path string, got {tls[key]!r}")
        if not isinstance(tls["insecure"], bool):
            raise ValueError(f"{where}: tls.insecure must be true or false, got {tls['insecure']!r}")
        for key in ("ca_file", "cert_file", "key_file"):
            if tls[key] and not os.path.isfile(tls[key]):
                raise ValueError(f"{where}: tls.{key} {tls[key]} does not exist or is not a file")
        if bool(tls["cert_file"]) != bool(tls["key_file"]):
            raise ValueError(f"{where}: tls.cert_file and tls.key_file go together (mutual TLS)")
        o["tls"] = tls

    o["client_id"] = o["client_id"] or f"edge-runtime-{device_id}"
    o["outbox"] = o["outbox"] or DEFAULT_OUTBOX.format(name=name)
    return o
