"""The service configuration: one TOML file, validated completely before anything starts.

Every problem is reported, not just the first, as one line naming the file and the dotted
key (`config.toml: sinks[1].baudrate: expected integer, got "fast"`), because an operator
fixing a config over SSH at a line that is down should need one round trip, not five.
Unknown keys are errors: a typo (`baudrat`) silently falling back to a default is how a
PLC ends up listening at the wrong speed.

Source and sink options are not listed here: each kind's module owns them (DEFAULTS,
KEYS, REQUIRED, TYPES), so a new camera or sink is one new file. Value checks that need
more than a type (framing, topics) are delegated to the sink's own validator so the
messages are the same whether the sink is built from a file or from code.

Values obey one rule whatever the key, enforced here and nowhere else for the file: every
number is finite and inside the range declared next to its key (Opt.minimum/maximum, or a
kind's RANGES), and every string passes its TEXT_RULES rule (no control or bidi characters,
bounded length; ids printable, hosts syntactically valid). A config that passes
check-config cannot loop, crash or silently stop delivering because of a value.
"""

from __future__ import annotations

import copy
import importlib
import ipaddress
import math
import os
import re
import socket
import tempfile
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from edge_runtime import config_toml

DEFAULT_STATE_DIR = "/var/lib/edge-runtime"
DEMO_LABEL = "<embedded demo>"
_MASK = "********"
_SECRET_KEYS = ("password", "secret", "token")
_URL_CREDENTIALS = re.compile(r"(://[^:/@\s]+:)([^@/\s]+)(@)")
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
# Characters that reorder or hide text (Trojan Source) and Unicode line breaks: never in a
# config string, and escaped in messages so an error line shows what the file holds.
_BIDI = frozenset((0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029))
_CONTROLS.update({c: f"\\u{c:04x}" for c in _BIDI})
_SINK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class ConfigError(Exception):
    """The config is invalid; `problems` holds one ready-to-print line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Opt:
    """One option of a fixed section: allowed TOML types, default, and value constraints.

    A numeric option must have both `minimum` and `maximum` (a test enforces it): NaN, inf
    and absurd values have each reached a running line through a key without a bound."""

    types: tuple[type, ...]
    default: Any = None
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    items: tuple[type, ...] | None = None  # element types for arrays
    label: str | None = None  # how to name the type in messages when types say too little
    text: str = "text"  # the rule for a string value: a key of TEXT_RULES


@dataclass(frozen=True)
class TextRule:
    """What a string option may hold. Every string gets one ("text" unless declared)."""

    max_len: int
    controls: str = ""  # control characters this kind of string legitimately holds
    printable: bool = False  # identifiers: str.isprintable() (no controls, format or bidi chars)
    host: bool = False  # a hostname or IP address, checked syntactically (no DNS at check time)
    says: str = "must not contain control or bidi characters"


# A string longer than 4096 characters is never a path, URL or topic we can use; 70,000
# characters in a topic or client id killed paho's network thread (MQTT caps fields at 64 KiB).
TEXT_RULES: dict[str, TextRule] = {
    "text": TextRule(4096),
    # A GStreamer pipeline may be written over several lines (a TOML multi-line string).
    "lines": TextRule(4096, controls="\t\n\r"),
    # device_id goes into every topic, result and client id: a control or bidi character
    # there made the broker reject every CONNECT ("Malformed UTF-8") while results queued.
    "id": TextRule(64, printable=True, says="must be 1-64 printable characters"),
    "host": TextRule(253, host=True, says="must be a hostname or an IP address"),
    # Serial framing: STX, ETX, CR LF... are the point of these strings.
    "frame": TextRule(256, controls="".join(map(chr, range(0x20))) + "\x7f"),
}
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def text_problem(value: str, rule: str = "text") -> str | None:
    """Why `value` cannot be a string option checked by TEXT_RULES[rule]; None when it can."""
    r = TEXT_RULES[rule]
    if len(value) > r.max_len:
        return f"must be at most {r.max_len} characters ({len(value)} given)"
    if r.printable and not (value and value.isprintable()):
        return r.says
    if r.host and not _is_host(value):
        return r.says
    if any((ord(c) in _CONTROLS and c not in r.controls) for c in value):
        return r.says
    return None


def _is_host(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    labels = (name[:-1] if name.endswith(".") else name).split(".")
    # All-numeric labels that are not an IP (999.1.1.1) are a typo, not a hostname.
    return all(_HOST_LABEL.fullmatch(x) for x in labels) and not all(x.isdigit() for x in labels)


def _hostname() -> str:
    return socket.gethostname() or "edge-runtime"


# Ranges are sensible limits for a line, documented in examples/config.toml.
TOP: dict[str, Opt] = {
    "device_id": Opt((str,), text="id"),  # default: the hostname
    "state_dir": Opt((str,)),  # default: /var/lib/edge-runtime, else ~/.local/state/edge-runtime
    "status_interval_s": Opt((int, float), 10.0, minimum=0.1, maximum=86400),
    "shutdown_timeout_s": Opt((int, float), 5.0, minimum=0, maximum=600),
}
SECTIONS: dict[str, dict[str, Opt]] = {
    "reader": {
        "decoders": Opt((list,), ["zxing", "opencv", "zbar"], items=(str,),
                        choices=("zxing", "opencv", "zbar")),
        "detector": Opt((str,), "auto", choices=("auto", "tflite", "ncnn", "none")),
        # Model version (a folder in the models dir); "" = the newest that passes its checks.
        # A version that fails its sha256 check or self-test is refused: the last good one runs.
        "model": Opt((str,), ""),
        "deadline_ms": Opt((int, float), 33.0, minimum=1, maximum=60000),
        # Threads for the detector's model call. 1 leaves the other cores to capture, decoding
        # and the sinks; 2 halves the detector's time where it is the bottleneck (see README).
        "detector_threads": Opt((int,), 1, minimum=1, maximum=16),
        # Motion blur: the belt's direction in the image (degrees, 0 = +x) and, when both
        # are given, speed x exposure = the smear length tried first (else estimated per ROI).
        "blur_angle": Opt((int, float), None, minimum=0, maximum=180),
        "speed_px_s": Opt((int, float), None, minimum=0, maximum=100000),
        "exposure_ms": Opt((int, float), None, minimum=0, maximum=1000),
        # A code the detector is this sure of that nothing could read is a noread event
        # when its label leaves the view unread (needs a detector).
        "noread_events": Opt((bool,), True),
        "noread_score": Opt((int, float), 0.6, minimum=0, maximum=1),
        # Save each noread's image (PNG) here for diagnosis; oldest removed beyond the limits.
        "noread_dir": Opt((str,), None),
        "noread_keep": Opt((int,), 200, minimum=1, maximum=1_000_000),
        "noread_max_mb": Opt((int, float), 50.0, minimum=0.1, maximum=1_000_000),
    },
    # Model rollout over MQTT (edge_runtime/rollout): off unless channel is set. The device
    # follows {topic_prefix}/fleet/model/{channel} on its first MQTT sink (or `sink`), installs
    # bundles signed by public_key, and steps back when the new model reads worse: more than
    # fallback_points below the previous model's rate over fallback_items items.
    "model": {
        "channel": Opt((str,), ""),
        "public_key": Opt((str,), None),
        "sink": Opt((str,), None),
        "fallback_items": Opt((int,), 500, minimum=10, maximum=1_000_000),
        "fallback_points": Opt((int, float), 5.0, minimum=0, maximum=100),
    },
    "trigger": {
        "mode": Opt((str,), "continuous", choices=("continuous", "window", "single")),
        "source": Opt((str,), "signal", choices=("signal", "serial", "mqtt", "opcua", "modbus")),
        "noread": Opt((bool,), True),
        "start_open": Opt((bool,), False),
    },
    "dedup": {
        "window_s": Opt((int, float), 2.0, minimum=0, maximum=3600),
        "max_distance_px": Opt((int, float), 200.0, minimum=0, maximum=100000),
        "direction": Opt((str,), "any", choices=("any", "+x", "-x", "+y", "-y")),
    },
    # Match-code validation (edge_runtime/match.py): each read carries "match": true|false.
    "match": {
        "mode": Opt((str,), "off", choices=("off", "exact", "regex", "list", "increment")),
        # exact: the whole payload; regex: searched in the payload (re.search), <= 512 characters.
        "pattern": Opt((str,), ""),
        # list: a file of accepted payloads, one a line (read at start and on reload).
        "list": Opt((str,), None),
        # increment: the payload's last run of digits must grow by step from read to read.
        "step": Opt((int,), 1, minimum=1, maximum=1_000_000_000),
        # increment: the value the first read must carry (default: whatever it carries).
        "start": Opt((int,), None, minimum=0, maximum=10**18),
    },
    "metrics": {
        "port": Opt((int,), None, minimum=0, maximum=65535),
        # Scraping from the network is a choice: host = "0.0.0.0".
        "host": Opt((str,), "127.0.0.1", text="host"),
    },
    # The web setup view (edge_runtime/web): off unless port is set. Beyond loopback it
    # needs an access token, read from the environment variable named by token_env.
    "web": {
        "port": Opt((int,), None, minimum=0, maximum=65535),
        "host": Opt((str,), "127.0.0.1", text="host"),
        "token_env": Opt((str,), None),
        "max_viewers": Opt((int,), 8, minimum=1, maximum=64),
    },
    "log": {
        "level": Opt((str,), "info", choices=("debug", "info", "warning", "error")),
        "format": Opt((str,), "json", choices=("json", "text")),
    },
}
# Keys of [source] and [[sinks]] the service itself owns (the rest belong to the kind).
SINK_COMMON = {"kind", "name"}


@dataclass
class Config:
    """A validated config: `data` has every default filled in.

    `path` is None for the embedded demo (and for a config built from a dict). `label` is
    how messages name the file.
    """

    data: dict
    path: str | None
    label: str
    notes: list[str] = field(default_factory=list)  # things to log at start (state_dir fallback)

    @property
    def demo(self) -> bool:
        return self.path is None and self.label == DEMO_LABEL

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def sinks(self) -> list[dict]:
        return self.data["sinks"]

    def masked(self) -> dict:
        """The config with secrets replaced, safe to print or publish."""
        return _mask(copy.deepcopy(self.data))

    def to_toml(self) -> str:
        head = f"# effective configuration of {self.label} (defaults filled in, secrets masked)\n"
        return head + config_toml.dumps(self.masked())


# ---------------------------------------------------------------------------------- loading


def load(path: str | None) -> Config:
    """Read and validate `path` (None: the embedded demo). Raises ConfigError."""
    if path is None:
        try:
            text = resources.files("edge_runtime").joinpath("data/demo.toml").read_text("utf-8")
        except OSError:
            raise ConfigError([f"{DEMO_LABEL}: edge_runtime/data/demo.toml is missing from this install "
                               "(package_data must include data/*.toml); run with --config FILE"]) from None
        return parse(text, DEMO_LABEL, None)
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = blob[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: line {line}: not UTF-8 text (TOML files are UTF-8)"]) from None
    return parse(text, path, path)


def parse(text: str, label: str, path: str | None) -> Config:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{label}: {_toml_error(str(exc))}"]) from None
    return from_dict(doc, label, path)


def from_dict(doc: dict, label: str = "<config>", path: str | None = None) -> Config:
    """Validate an already-parsed document (what tomllib returns). Raises ConfigError."""
    v = _Validator(label, demo=path is None and label == DEMO_LABEL)
    data = v.run(doc)
    if v.problems:
        raise ConfigError(v.problems)
    return Config(data=data, path=path, label=label, notes=v.notes)


def _toml_error(msg: str) -> str:
    """tomllib says "Invalid value (at line 3, column 9)"; lead with the position."""
    m = re.search(r"\s*\(at line (\d+), column (\d+)\)\s*$", msg)
    if m:
        return f"line {m.group(1)}, column {m.group(2)}: {msg[: m.start()]}"
    m = re.search(r"\s*\(at end of document\)\s*$", msg)
    if m:
        return f"at end of file: {msg[: m.start()]}"
    return msg


# ------------------------------------------------------------------------------- validation


def type_name(types: tuple[type, ...]) -> str:
    names = []
    for t in types:
        if t is type(None):
            continue
        n = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array", dict: "table"}.get(t, t.__name__)
        if n not in names:
            names.append(n)
    if "integer" in names and "number" in names:
        names.remove("integer")
    return " or ".join(names)


def shown(value: Any) -> str:
    """A value as the user wrote it in TOML, for "got ..." in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return config_toml.value(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types:
        return True
    return isinstance(value, types)


class _Validator:
    def __init__(self, label: str, demo: bool) -> None:
        self.label = label
        self.demo = demo
        self.problems: list[str] = []
        self.notes: list[str] = []

    def err(self, key: str, msg: str) -> None:
        # A quoted TOML key or a refused value may hold anything; the line must stay one
        # printable line (zero-width and other invisible characters escaped too).
        key, msg = _printable(key), _printable(msg)
        self.problems.append(f"{self.label}: {key}: {msg}" if key else f"{self.label}: {msg}")

    # -- generic checks
    def check(self, key: str, value: Any, opt: Opt) -> bool:
        if not type_ok(value, opt.types):
            self.err(key, f"expected {opt.label or type_name(opt.types)}, got {shown(value)}")
            return False
        if not isinstance(value, dict) and not self.leaves(key, value, opt.text):
            return False  # a table's leaves are checked with its own keys' rules
        if opt.items is not None:
            ok = True
            for i, item in enumerate(value):
                if not type_ok(item, opt.items):
                    self.err(f"{key}[{i}]", f"expected {type_name(opt.items)}, got {shown(item)}")
                    ok = False
                elif opt.choices is not None and item not in opt.choices:
                    self.err(f"{key}[{i}]", f"expected one of {_choices(opt.choices)}, got {shown(item)}")
                    ok = False
            return ok
        if opt.choices is not None and value not in opt.choices:
            self.err(key, f"expected one of {_choices(opt.choices)}, got {shown(value)}")
            return False
        if opt.minimum is not None and isinstance(value, (int, float)) and value < opt.minimum:
            self.err(key, f"must be at least {opt.minimum:g}, got {shown(value)}")
            return False
        if opt.maximum is not None and isinstance(value, (int, float)) and value > opt.maximum:
            self.err(key, f"must be at most {opt.maximum:g}, got {shown(value)}")
            return False
        return True

    def leaves(self, key: str, value: Any, text: str = "text") -> bool:
        """The rules every value obeys whatever its key, down into arrays and tables: numbers
        are finite, strings pass their TEXT_RULES rule. One line for the first bad leaf."""
        if isinstance(value, float) and not math.isfinite(value):
            self.err(key, f"must be a finite number, got {shown(value)}")
            return False
        if isinstance(value, str):
            problem = text_problem(value, text)
            if problem:
                self.err(key, f"{problem}, got {shown(value)}")
                return False
        if isinstance(value, list):
            return all(self.leaves(f"{key}[{i}]", x) for i, x in enumerate(value))
        if isinstance(value, dict):
            return all(self.leaves(f"{key}.{k}", x) for k, x in value.items())
        return True

    def table(self, prefix: str, given: Any, spec: dict[str, Opt]) -> dict:
        """Validate a fixed table; returns it with defaults filled in."""
        out = {k: copy.deepcopy(o.default) for k, o in spec.items()}
        if given is None:
            return out
        if not isinstance(given, dict):
            self.err(prefix, f"expected a table, got {shown(given)}")
            return out
        for k, v in given.items():
            key = f"{prefix}.{k}" if prefix else k
            if k not in spec:
                self.err(key, f"unknown key (known: {', '.join(spec)})")
            elif self.check(key, v, spec[k]):
                out[k] = v
        return out

    # -- the whole document
    def run(self, doc: dict) -> dict:
        known = set(TOP) | set(SECTIONS) | {"source", "sinks"}
        for k in doc:
            if k not in known:
                self.err(k, f"unknown key (known: {', '.join(sorted(known))})")
        data = self.table("", {k: v for k, v in doc.items() if k in TOP}, TOP)
        data["device_id"] = data["device_id"] if data["device_id"] is not None else _hostname()
        if not data["device_id"] or any(c in data["device_id"] for c in "/+#\x00") or data["device_id"] != data["device_id"].strip():
            self.err("device_id", f"must be non-empty, without '/', '+', '#' or spaces at the ends, got {shown(data['device_id'])}")
        data["state_dir"] = self.state_dir(data["state_dir"])
        for name, spec in SECTIONS.items():
            data[name] = self.table(name, doc.get(name), spec)
        if not data["reader"]["decoders"]:
            self.err("reader.decoders", "must name at least one decoder")
        data["source"] = self.source(doc.get("source"))
        data["sinks"] = self.sinks(doc.get("sinks"), data)
        self.cross(data)
        # Order the output like the example config.
        order = [*TOP, "reader", "model", "source", "trigger", "dedup", "match", "metrics", "web", "log", "sinks"]
        return {k: data[k] for k in order}

    def state_dir(self, given: str | None) -> str:
        if given is not None:
            if not given:
                self.err("state_dir", "must not be empty")
            return os.path.expanduser(given)
        if self.demo:
            # The demo must start anywhere (a laptop, CI) without touching /var.
            return os.path.join(tempfile.gettempdir(), f"edge-runtime-demo-{os.getuid()}")
        if _writable(DEFAULT_STATE_DIR):
            return DEFAULT_STATE_DIR
        xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
        fallback = os.path.join(xdg, "edge-runtime")
        self.notes.append(f"state_dir {DEFAULT_STATE_DIR} is not writable (not root?); using {fallback}")
        return fallback

    def source(self, given: Any) -> dict:
        if given is None:
            self.err("source", "missing table [source] (e.g. kind = \"camera\")")
            return {"kind": None}
        if not isinstance(given, dict):
            self.err("source", f"expected a table, got {shown(given)}")
            return {"kind": None}
        from edge_runtime import capture

        kind = given.get("kind")
        if kind is None:
            self.err("source.kind", f"missing (one of {_choices(tuple(capture.KINDS))})")
            return dict(given)
        if not isinstance(kind, str) or kind not in capture.KINDS:
            self.err("source.kind", f"expected one of {_choices(tuple(capture.KINDS))}, got {shown(kind)}")
            return dict(given)
        defaults, keys, required, types = capture.spec(kind)
        opts = {k: v for k, v in given.items() if k != "kind"}
        out = self.kind_options("source", kind, opts, defaults, keys, required, types, capture.source_class(kind))
        return {"kind": kind, **out}

    def kind_options(
        self,
        prefix: str,
        kind: str,
        opts: dict,
        defaults: dict,
        keys: Any,
        required: Any,
        types: dict | None,
        module: Any = None,
    ) -> dict:
        """Options of one source/sink kind, checked against what its module (or source
        class) declares: DEFAULTS, KEYS, REQUIRED, TYPES, and RANGES / TEXT for values."""
        ok_keys = set(keys)
        out = copy.deepcopy(dict(defaults))
        rules = kind_rules(defaults, keys, types, module)
        for k, v in opts.items():
            key = f"{prefix}.{k}"
            if k not in ok_keys:
                self.err(key, f"unknown key for kind {shown(kind)} (known: {', '.join(sorted(ok_keys | {'kind'}))})")
                continue
            opt = rules[k]
            if opt is not None and not self.check(key, v, opt):
                continue
            sub = _sub_table(module, k) if isinstance(v, dict) else None
            if sub is not None:  # a nested table with its own keys (mqtt tls)
                v = self.kind_options(key, kind, v, sub.DEFAULTS, sub.KEYS, (), sub.TYPES, sub)
            elif (opt is None or isinstance(v, dict)) and not self.leaves(key, v):
                continue
            out[k] = v
        for k in sorted(required or ()):
            if out.get(k) in (None, "") and opts.get(k) in (None, ""):  # given but wrong-typed: already reported
                self.err(f"{prefix}.{k}", f"missing (required for kind {shown(kind)})")
        return out

    def sinks(self, given: Any, data: dict) -> list[dict]:
        from edge_runtime import sinks as sink_registry

        if given is None or given == []:
            self.err("sinks", "no [[sinks]] configured: results would go nowhere (add e.g. [[sinks]] kind = \"stdout\")")
            return []
        if not isinstance(given, list) or not all(isinstance(s, dict) for s in given):
            self.err("sinks", "expected an array of tables ([[sinks]])")
            return []
        out, names = [], set()
        for i, s in enumerate(given):
            prefix = f"sinks[{i}]"
            kind = s.get("kind")
            if kind is None:
                self.err(f"{prefix}.kind", f"missing (one of {_choices(tuple(sink_registry.KINDS))})")
                continue
            if not isinstance(kind, str) or kind not in sink_registry.KINDS:
                self.err(f"{prefix}.kind", f"expected one of {_choices(tuple(sink_registry.KINDS))}, got {shown(kind)}")
                continue
            name = s.get("name", f"{kind}{i}")
            if not isinstance(name, str) or not _SINK_NAME.fullmatch(name):
                self.err(f"{prefix}.name", f"expected 1-64 letters, digits, '_', '-' or '.', got {shown(name)}")
                name = f"{kind}{i}"
            elif name in names:
                self.err(f"{prefix}.name", f"duplicate sink name {shown(name)}")
            names.add(name)
            try:
                module = sink_module(kind)
            except ImportError as exc:
                self.err(f"{prefix}.kind", f"sink {shown(kind)} cannot be loaded here: {exc}")
                continue
            opts = {k: v for k, v in s.items() if k not in SINK_COMMON}
            if kind in ("mqtt",) and "status_interval_s" not in opts:
                opts["status_interval_s"] = data["status_interval_s"]
            before = len(self.problems)
            resolved = self.kind_options(
                prefix, kind, opts,
                getattr(module, "DEFAULTS", {}), getattr(module, "KEYS", ()),
                getattr(module, "REQUIRED", ()), getattr(module, "TYPES", None), module,
            )
            if "password_env" in resolved and resolved["password_env"]:
                var = resolved["password_env"]
                if var not in os.environ:
                    self.err(f"{prefix}.password_env", f"environment variable {var} is not set")
            if "outbox" in resolved and not resolved["outbox"]:
                # Durable by default, next to the ids: the outbox is what survives a restart.
                resolved["outbox"] = os.path.join(data["state_dir"], f"outbox-{name}.sqlite")
            if len(self.problems) == before:
                self.sink_values(prefix, kind, name, data["device_id"], module, resolved)
            out.append({"kind": kind, "name": name, **resolved})
        return out

    def sink_values(self, prefix: str, kind: str, name: str, device_id: str, module: Any, opts: dict) -> None:
        """Run the sink's own value checks (ranges, topics, framing) without starting it."""
        check = getattr(module, "validate_options", None) or getattr(module, "resolve_options", None)
        try:
            if check is not None:
                check(name, device_id, dict(opts))
            else:
                cls = getattr(module, "".join(p.capitalize() for p in kind.split("_")) + "Sink", None)
                validate = getattr(cls, "_validate", None)
                if validate is None:
                    return
                probe = cls.__new__(cls)
                probe.name = name
                validate(probe, dict(opts))
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            key = _key_in(msg, opts)
            self.err(f"{prefix}.{key}" if key else prefix, msg)

    def cross(self, data: dict) -> None:
        self.web(data["web"])
        self.rollout(data)
        from edge_runtime import match

        if not any(p.startswith(f"{self.label}: match.") for p in self.problems):  # one line per key
            for key, msg in match.problems(data["match"]):
                self.err(key, msg)
        trig = data["trigger"]
        kinds = {s["kind"] for s in data["sinks"]}
        if trig["mode"] != "continuous" and trig["source"] in ("serial", "mqtt", "opcua", "modbus") and trig["source"] not in kinds:
            self.err("trigger.source", f"{shown(trig['source'])} needs a [[sinks]] entry with kind = {shown(trig['source'])}")


    def rollout(self, data: dict) -> None:
        """One line per key: what a channel needs is said on model.channel, all of it at once."""
        m = data["model"]
        from edge_runtime.rollout import bundle, keys

        if m["public_key"] and (problem := keys.public_problem(m["public_key"])):
            self.err("model.public_key", problem)
        if not m["channel"]:
            return
        if problem := bundle.channel_problem(m["channel"]):
            self.err("model.channel", problem)
            return
        mqtt = [s["name"] for s in data["sinks"] if s.get("kind") == "mqtt"]
        needs = []
        if not m["public_key"]:
            needs.append("model.public_key (the line 'edge-runtime models keygen' prints)")
        if not mqtt:
            needs.append('a [[sinks]] entry with kind = "mqtt" (bundles come over MQTT)')
        if data["reader"]["detector"] == "none":
            needs.append('a detector (reader.detector is "none")')
        if needs:
            self.err("model.channel", "needs " + "; ".join(needs))
        elif m["sink"] is not None and m["sink"] not in mqtt:
            self.err("model.sink", f"{shown(m['sink'])} is not an mqtt sink (mqtt sinks: {', '.join(mqtt)})")

    def web(self, web: dict) -> None:
        """Beyond loopback the view shows the line to anyone on the network: a token is required."""
        var = web["token_env"]
        if var and var not in os.environ:
            self.err("web.token_env", f"environment variable {var} is not set")
        elif var and not os.environ[var]:
            self.err("web.token_env", f"environment variable {var} is empty")
        elif web["port"] is not None and not var and not is_loopback(web["host"]):
            self.err("web.token_env", f"web.host {shown(web['host'])} is beyond loopback: set token_env "
                     "to the name of an environment variable holding the access token")


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or "localhost": reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _opt_for(key: str, default: Any, types: tuple | None, rng: tuple[float, float] | None = None,
             text: str = "text") -> Opt | None:
    """The rule for a kind's option: its TYPES entry, else the type of its default; with
    its RANGES entry as minimum/maximum and its TEXT entry as the string rule."""
    extra = {"minimum": rng[0], "maximum": rng[1], "text": text} if rng else {"text": text}
    if types:
        t = tuple(types)
        if type(None) in t:
            t = tuple(x for x in t if x is not type(None))
        return Opt(t, **extra) if t else None
    if default is None:
        return None  # the module validates it itself
    if isinstance(default, bool):
        return Opt((bool,))
    if isinstance(default, int):
        # Widened to numbers: modules use int defaults for options that also take 1.5 (stopbits).
        return Opt((int, float), label="integer", **extra)
    if isinstance(default, float):
        return Opt((int, float), **extra)
    if isinstance(default, (str, bytes)):
        return Opt((str,), **extra)
    if isinstance(default, (list, tuple)):
        return Opt((list,))
    if isinstance(default, dict):
        return Opt((dict,))
    return None


def kind_rules(defaults: dict, keys: Any, types: dict | None, module: Any = None) -> dict[str, Opt | None]:
    """The rule of every option of one source/sink kind (None: only the generic leaf rules).

    `module` (or a source class) may declare RANGES = {key: (lo, hi)} and TEXT = {key: rule};
    the config enforces them here, so a kind never writes its own range checks for the file."""
    ranges = getattr(module, "RANGES", None) or {}
    text = getattr(module, "TEXT", None) or {}
    return {k: _opt_for(k, defaults.get(k), (types or {}).get(k), ranges.get(k), text.get(k, "text")) for k in keys}


@dataclass(frozen=True)
class _Sub:
    DEFAULTS: dict
    KEYS: Any
    TYPES: dict | None
    RANGES: dict
    TEXT: dict


def _sub_table(module: Any, key: str) -> _Sub | None:
    """A nested table a module declares as <KEY>_DEFAULTS, <KEY>_KEYS... (mqtt's tls)."""
    p = key.upper()
    keys = getattr(module, f"{p}_KEYS", None)
    if keys is None:
        return None
    return _Sub(getattr(module, f"{p}_DEFAULTS", {}), keys, getattr(module, f"{p}_TYPES", None),
                getattr(module, f"{p}_RANGES", {}), getattr(module, f"{p}_TEXT", {}))


def sink_module(kind: str) -> Any:
    """The module declaring a sink kind's options: `<module>_options` when the sink keeps
    them apart (mqtt_options, importable without paho's client), else the sink's module.
    The sink's module is imported either way: a sink that cannot load is a config error."""
    from edge_runtime import sinks as sink_registry

    name = sink_registry.KINDS[kind].split(":")[0]
    module = importlib.import_module(name)
    try:
        return importlib.import_module(f"{name}_options")
    except ModuleNotFoundError as exc:
        if exc.name != f"{name}_options":
            raise
        return module


def every_option() -> list[tuple[str, str | None, Opt | None]]:
    """(dotted key, kind, rule) for every option the config knows: top level, sections, every
    source and sink kind, nested tables too. Tests walk it, so a key added tomorrow is fuzzed
    and must declare a finite range (numbers) the day it is added."""
    from edge_runtime import capture
    from edge_runtime import sinks as sink_registry

    out: list[tuple[str, str | None, Opt | None]] = [(k, None, o) for k, o in TOP.items()]
    out += [(f"{sec}.{k}", None, o) for sec, spec in SECTIONS.items() for k, o in spec.items()]
    for kind in capture.KINDS:
        defaults, keys, _, types = capture.spec(kind)
        rules = kind_rules(defaults, keys, types, capture.source_class(kind))
        out += [(f"source.{k}", kind, o) for k, o in sorted(rules.items())]
    for kind in sink_registry.KINDS:
        mod = sink_module(kind)
        rules = kind_rules(getattr(mod, "DEFAULTS", {}), getattr(mod, "KEYS", ()), getattr(mod, "TYPES", None), mod)
        for k, o in sorted(rules.items()):
            out.append((f"sinks[0].{k}", kind, o))
            sub = _sub_table(mod, k)
            if sub is not None:
                for sk, so in sorted(kind_rules(sub.DEFAULTS, sub.KEYS, sub.TYPES, sub).items()):
                    out.append((f"sinks[0].{k}.{sk}", kind, so))
    return out


def _key_in(msg: str, opts: dict) -> str | None:
    """The option a sink's error message is about (they quote it: 'qos', tls.ca_file...)."""
    for m in re.finditer(r"'?([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)'?", msg):
        word = m.group(1)
        if word.split(".")[0] in opts and word not in ("mqtt", "serial", "sink"):
            return word
    return None


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else _CONTROLS.get(ord(c)) or f"\\u{ord(c):04x}" for c in text)


def _choices(values: tuple) -> str:
    return ", ".join(config_toml.value(v) for v in values)


def _writable(path: str) -> bool:
    """Can we create/write `path` (existing or not)? Checked without creating anything."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        parent = os.path.dirname(p)
        if parent == p:
            return False
        p = parent
    return os.path.isdir(p) and os.access(p, os.W_OK | os.X_OK)


def _mask(obj: Any) -> Any:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if v is not None and any(s in k.lower() for s in _SECRET_KEYS) and not k.lower().endswith("_env"):
                obj[k] = _MASK
            else:
                obj[k] = _mask(v)
        return obj
    if isinstance(obj, list):
        return [_mask(v) for v in obj]
    if isinstance(obj, str):
        return _URL_CREDENTIALS.sub(lambda m: m.group(1) + _MASK + m.group(3), obj)
    return obj
