"""The plant side of a rollout: publish a signed bundle as the retained message of a channel,
fetch what a channel holds, and promote canary -> stable when the database says the canary reads
at least as well.

Promotion compares pooled read rates (reads / (reads + noreads)) from the collector's database:
  canary: devices whose latest status says they follow the `from` channel and run the canary's
          version, counting their results since they switched to it (status model_rollout.since);
  stable: devices that follow the `to` channel, counting their results over the same hours.
Devices whose latest status is their Last Will (offline: it carries no channel) are not counted.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import paho.mqtt.client as mqtt

from edge_runtime.rollout import bundle as bundle_mod
from edge_runtime.rollout import keys

WAIT_S = 10.0


class PlantError(RuntimeError):
    """One line for the operator (exit 1)."""


def _client(cfg) -> mqtt.Client:  # noqa: ANN001 - fleet.config.CollectorConfig
    from edge_runtime.fleet.broker import configure

    return configure(mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311,
                                 clean_session=True), cfg)


def _connect(cfg) -> mqtt.Client:  # noqa: ANN001
    b = cfg.broker
    c = _client(cfg)
    connected = threading.Event()
    failed: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties):  # noqa: ANN001
        if reason_code.is_failure:
            failed.append(str(reason_code))
        connected.set()

    c.on_connect = on_connect
    try:
        c.connect(b["host"], b["port"], keepalive=int(b["keepalive"]))
    except OSError as e:
        raise PlantError(f"mqtt broker {b['host']}:{b['port']}: {e.strerror or e}") from None
    c.loop_start()
    if not connected.wait(WAIT_S) or failed:
        c.loop_stop()
        raise PlantError(f"mqtt broker {b['host']}:{b['port']} refused or did not answer: "
                         f"{failed[0] if failed else 'no CONNACK'}")
    return c


def publish(cfg, channel: str, message: bytes) -> None:  # noqa: ANN001
    """The retained message of `channel`, acknowledged by the broker (QoS 1) before this returns."""
    c = _connect(cfg)
    try:
        info = c.publish(bundle_mod.topic(cfg.topic_prefix, channel), message, qos=1, retain=True)
        info.wait_for_publish(WAIT_S)
        if not info.is_published():
            raise PlantError(f"mqtt broker did not acknowledge the bundle within {WAIT_S:g} s")
    finally:
        c.disconnect()
        c.loop_stop()


def fetch(cfg, channel: str) -> bytes | None:  # noqa: ANN001
    """The retained message of `channel`, or None when there is none."""
    got: list[bytes] = []
    done = threading.Event()
    c = _connect(cfg)
    topic = bundle_mod.topic(cfg.topic_prefix, channel)

    def on_message(client, userdata, msg):  # noqa: ANN001
        if msg.retain and msg.topic == topic:
            got.append(bytes(msg.payload))
            done.set()

    c.on_message = on_message
    try:
        c.subscribe(topic, qos=1)
        done.wait(3.0)  # a retained message comes right after SUBACK; none means the channel is empty
    finally:
        c.disconnect()
        c.loop_stop()
    return got[0] if got and got[0] else None


@dataclass
class Side:
    channel: str
    devices: list[str]
    reads: int
    noreads: int

    @property
    def items(self) -> int:
        return self.reads + self.noreads

    @property
    def rate(self) -> float | None:
        return self.reads / self.items if self.items else None

    def describe(self) -> str:
        rate = f"{100 * self.rate:.2f}%" if self.rate is not None else "no items"
        return f"{self.channel} {rate} ({len(self.devices)} device(s), {self.items} items)"


def compare(db, version: str, src: str, dst: str, hours: float, now: datetime | None = None) -> tuple[Side, Side]:  # noqa: ANN001
    """(canary side, stable side) read rates from the database (see the module doc)."""
    now = now or datetime.now(timezone.utc)
    window = now - timedelta(hours=hours)
    canary: dict[str, datetime] = {}
    stable: dict[str, datetime] = {}
    devices, _ = db.fleet_rows(window)
    for d in devices:
        try:
            status = json.loads(d["status"]) if isinstance(d["status"], str) else (d["status"] or {})
        except ValueError:
            continue
        ro = status.get("model_rollout") if isinstance(status, dict) else None
        if not isinstance(ro, dict):
            continue
        if ro.get("channel") == src and status.get("model") == version:
            since = _parse(ro.get("since"))
            canary[d["device_id"]] = max(window, since) if since else window
        elif ro.get("channel") == dst:
            stable[d["device_id"]] = window
    sides = []
    for name, group in ((src, canary), (dst, stable)):
        counts = db.kind_counts(group)
        sides.append(Side(name, sorted(group), sum(r for r, _ in counts.values()), sum(n for _, n in counts.values())))
    return sides[0], sides[1]


def _parse(ts) -> datetime | None:  # noqa: ANN001
    try:
        return datetime.strptime(str(ts), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def promote(cfg, db, key, src: str, dst: str, hours: float = 1.0, min_items: int = 100,  # noqa: ANN001
            tolerance: float = 0.0) -> str:
    """Re-sign the bundle of `src` for `dst` and publish it, when the canary is not worse.
    Returns the line to print; raises PlantError with the refusal."""
    message = fetch(cfg, src)
    if message is None:
        raise PlantError(f"promote refused: nothing is published on channel {src!r} "
                         f"({bundle_mod.topic(cfg.topic_prefix, src)})")
    try:
        b = bundle_mod.verify(message, key.public_key(), src)
    except bundle_mod.Refused as e:
        raise PlantError(f"promote refused: the bundle on {src!r} does not verify with this key: {e}") from None
    canary, stable = compare(db, b.version, src, dst, hours)
    if canary.items < min_items:
        raise PlantError(f"promote refused: model {b.version} has {canary.items} items from {len(canary.devices)} "
                         f"{src} device(s) running it, fewer than --min-items {min_items}")
    if stable.rate is not None and canary.rate < stable.rate - tolerance / 100.0:
        raise PlantError(f"promote refused: model {b.version} reads worse than {dst}: {canary.describe()} "
                         f"< {stable.describe()}" + (f" - {tolerance:g} points" if tolerance else ""))
    publish(cfg, dst, bundle_mod.resign(message, dst, key))
    base = stable.describe() if stable.rate is not None else f"{dst}: no items to compare with"
    return f"promoted model {b.version} from {src} to {dst}: {canary.describe()} vs {base}"


def load_key(path: str):  # noqa: ANN201
    try:
        return keys.load_private(path)
    except keys.KeyProblem as e:
        raise PlantError(str(e)) from None
