"""Write the effective configuration back as TOML (what `check-config` prints).

Printing TOML rather than JSON means the output can be saved and used as a config file
as-is. Only the shapes our config has are supported: scalars, arrays, inline tables,
tables and one array of tables. TOML has no null: an option that is not set is shown as
a comment so the operator still sees it exists.
"""

from __future__ import annotations

import json
import re

_BARE = re.compile(r"[A-Za-z0-9_-]+")
# TOML forbids raw control characters in basic strings (tab aside); C1 escaped as well
# because the output goes to a terminal.
_ESCAPE = {c: f"\\u{c:04x}" for c in (0x7F, *range(0x80, 0xA0))}


def key(k: str) -> str:
    return k if _BARE.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).translate(_ESCAPE)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        items = [f"{key(k)} = {value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _pairs(table: dict) -> list[str]:
    lines = []
    for k, v in table.items():
        if v is None:
            lines.append(f"# {key(k)} = (not set)")
        else:
            lines.append(f"{key(k)} = {value(v)}")
    return lines


def dumps(doc: dict) -> str:
    """TOML text for `doc`: top-level scalars first, then tables, then arrays of tables."""
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict) and not _is_table_array(v)}
    out = _pairs(scalars)
    for k, v in doc.items():
        if isinstance(v, dict):
            out += ["", f"[{key(k)}]", *_pairs(v)]
    for k, v in doc.items():
        if _is_table_array(v):
            for item in v:
                out += ["", f"[[{key(k)}]]", *_pairs(item)]
    return "\n".join(out) + "\n"


def _is_table_array(v: object) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)
