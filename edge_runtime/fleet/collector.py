"""`edge-runtime collect`: results from MQTT into a database, acknowledged only after the commit.

Subscriptions (MQTT 5, QoS 1):
  $share/{group}/{prefix}/+/result   shared: each result goes to one collector of the group, so
                                     several instances split the load
  {prefix}/+/status                  not shared: every collector gets every status, including the
                                     retained ones at subscribe time (a broker never sends retained
                                     messages on a shared subscription, MQTT 5 §4.8.2); the upsert
                                     is idempotent and keeps the newer status

Nothing is lost: paho runs with manual_ack=True; a message is acknowledged (PUBACK) only after
the batch that holds it was committed. A collector killed mid-batch never acknowledged it, so
the broker sends it again: to this collector when it comes back with the same client id
(clean_start=False and a session expiry keep its session, and mosquitto keeps a disconnected
member's share in that session), or to another member on brokers that re-dispatch. Nothing is
stored twice: results are inserted with conflict-ignore on (device_id, id).

Acknowledgements belong to a connection: a PUBACK for a message received before a reconnect is
not sent (the broker re-sends that message with the session, and the new copy is acknowledged
when it is committed). Acks go out in the order the messages arrived, as MQTT 5 requires.

A malformed message (not JSON, missing fields, device_id not the topic's, ...) can never be
stored: it is counted, logged (rate-limited) and acknowledged, so it is not redelivered forever.

Threads: paho's network thread only queues messages; the main thread batches, writes, commits
and acknowledges. SIGTERM/SIGINT: the batch in hand is finished (committed and acknowledged),
the rest stays unacknowledged with the broker for the next start.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_runtime.fleet.broker import configure
from edge_runtime.fleet.config import CollectorConfig
from edge_runtime.fleet.db import Database, DbError, open_db
from edge_runtime.fleet.rows import Malformed, ResultRow, StatusRow, now_iso, result_row, status_row

log = logging.getLogger("edge_runtime.collect")

STATS_EVERY_S = 30.0
# The consumer should be back before the producers: after a broker restart mosquitto 2.0 has
# forgotten shared subscriptions (it restores the session, not the $share subscription), and a
# result a device publishes before we subscribe again matches no one. Devices retry after 1 s;
# we retry every 0.1 s doubling to 0.5 s (a refused connect to a local broker costs nothing).
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 0.5
RETRY_MAX_S = 30.0


class Collector:
    def __init__(self, cfg: CollectorConfig, db: Database | None = None) -> None:
        self.cfg = cfg
        self.db = db
        b = cfg.broker
        self.where = f"{b['host']}:{b['port']}"
        self.prefix = cfg.topic_prefix
        plain = f"{self.prefix}/+/result"
        self.topic_results = f"$share/{cfg.group}/{plain}" if cfg.shared else plain
        self.topic_status = f"{self.prefix}/+/status"
        self.stop_event = threading.Event()
        self.queue: queue.Queue[tuple[int, int, int, str, bytes, str]] = queue.Queue()
        self._lock = threading.Lock()  # _gen/_connected against acks from the writer
        self._gen = 0
        self._connected = False
        self._refused = 0
        self.counters: dict[str, int] = {
            "received": 0, "stored": 0, "duplicates": 0, "statuses": 0, "malformed": 0,
            "db_errors": 0, "acks_not_sent": 0, "connects": 0,
        }
        self.client = self._make_client()

    # ---- MQTT -----------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cfg.client_id,
                        protocol=mqtt.MQTTv5, manual_ack=True)
        configure(c, self.cfg)
        c.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        return c

    def _connect_properties(self) -> Properties:
        p = Properties(PacketTypes.CONNECT)
        p.SessionExpiryInterval = int(self.cfg.broker["session_expiry_s"])
        p.ReceiveMaximum = int(self.cfg.broker["receive_maximum"])
        return p

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        if reason_code.is_failure:
            log.error("mqtt broker %s refused the connection: %s (client id %r)", self.where, reason_code,
                      self.cfg.client_id)
            return
        with self._lock:
            self._gen += 1
            self._connected = True
        self.counters["connects"] += 1
        log.info("connected to %s as %r (session present: %s), group %r",
                 self.where, self.cfg.client_id, bool(flags.session_present), self.cfg.group)
        client.subscribe([(self.topic_results, SubscribeOptions(qos=1)), (self.topic_status, SubscribeOptions(qos=1))])

    def _on_connect_fail(self, client, userdata) -> None:  # noqa: ANN001
        log.warning("cannot connect to mqtt broker %s; retrying", self.where)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:  # noqa: ANN001
        with self._lock:
            self._gen += 1
            was = self._connected
            self._connected = False
        if was and not self.stop_event.is_set():
            log.warning("disconnected from mqtt broker %s (%s); reconnecting, unacknowledged messages come back "
                        "with the session", self.where, reason_code)

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        self.queue.put((self._gen, msg.mid, msg.qos, msg.topic, bytes(msg.payload), now_iso()))

    # ---- writing --------------------------------------------------------------------------
    def _device_of(self, topic: str) -> tuple[str, str]:
        """('result'|'status'|'', device_id) from a topic under our prefix."""
        head = self.prefix + "/"
        if topic.startswith(head):
            rest = topic[len(head):]
            device, _, leaf = rest.rpartition("/")
            if device and "/" not in device and leaf in ("result", "status"):
                return leaf, device
        return "", ""

    def _take_batch(self) -> list[tuple[int, int, int, str, bytes, str]]:
        try:
            batch = [self.queue.get(timeout=0.2)]
        except queue.Empty:
            return []
        size = int(self.cfg.db["batch_size"])
        deadline = time.monotonic() + float(self.cfg.db["batch_ms"]) / 1000.0
        while len(batch) < size:
            left = deadline - time.monotonic()
            try:
                batch.append(self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _rows(self, batch: list) -> tuple[list[ResultRow], list[StatusRow], int]:
        """(distinct results, statuses, valid results including redeliveries within the batch)"""
        results: dict[tuple[str, int], ResultRow] = {}
        valid = 0
        statuses: list[StatusRow] = []
        for _gen, _mid, _qos, topic, payload, rx in batch:
            self.counters["received"] += 1
            leaf, device = self._device_of(topic)
            try:
                if leaf == "result":
                    row = result_row(device, payload, rx)
                    valid += 1
                    results.setdefault((row.device_id, row.id), row)  # a redelivery within one batch
                elif leaf == "status":
                    statuses.append(status_row(device, payload, rx))
                else:
                    raise Malformed("topic is neither {prefix}/<device>/result nor /status")
            except Malformed as e:
                self._malformed(topic, str(e))
        return list(results.values()), statuses, valid

    def _malformed(self, topic: str, why: str) -> None:
        self.counters["malformed"] += 1
        log.warning("malformed message on %r acknowledged and dropped (it can never be stored): %s "
                    "(%d malformed so far)", topic[:200], why, self.counters["malformed"])

    def _reopen(self) -> None:
        if self.db is not None:
            try:
                self.db.close()
            except Exception:  # noqa: BLE001 - the connection is broken anyway
                pass
            self.db = None
        self.db = open_db(self.cfg.db["url"], self.cfg.db_password)

    def _write(self, results: list[ResultRow], statuses: list[StatusRow]) -> int | None:
        """Commit; retried until it succeeds. None: stopped before it did (nothing to ack)."""
        delay = 1.0
        while True:
            try:
                if self.db is None:
                    self._reopen()
                return self.db.write(results, statuses)
            except DbError as e:
                self.counters["db_errors"] += 1
                if not e.transient and len(results) + len(statuses) > 1:
                    # One row the database refuses (a value out of its range...) must not hold
                    # back the whole batch forever: write row by row, the refused ones are malformed.
                    return self._write_one_by_one(results, statuses)
                if not e.transient:
                    what = results[0] if results else statuses[0]
                    self._refused += len(results)
                    self._malformed(f"{self.prefix}/{what.device_id}/...", f"refused by the database: {e}")
                    return 0
                log.error("%s; retrying in %.0f s, nothing of this batch is acknowledged", e, delay)
                if self.db is not None:
                    try:
                        self.db.close()
                    except Exception:  # noqa: BLE001
                        pass
                    self.db = None
            if self.stop_event.wait(delay):
                return None
            delay = min(delay * 2, RETRY_MAX_S)

    def _write_one_by_one(self, results: list[ResultRow], statuses: list[StatusRow]) -> int | None:
        new = 0
        for r in results:
            n = self._write([r], [])
            if n is None:
                return None
            new += n
        for s in statuses:
            if self._write([], [s]) is None:
                return None
        return new

    def _ack(self, batch: list) -> None:
        with self._lock:
            for gen, mid, qos, *_ in batch:
                if qos == 0:
                    continue
                if gen == self._gen and self._connected:
                    self.client.ack(mid, qos)
                else:
                    self.counters["acks_not_sent"] += 1  # an older connection's: the broker re-sends it

    def process(self, batch: list) -> bool:
        results, statuses, valid = self._rows(batch)
        self._refused = 0  # results of this batch the database refused (counted as malformed)
        if results or statuses:
            new = self._write(results, statuses)
            if new is None:
                return False
            self.counters["stored"] += new
            self.counters["duplicates"] += valid - new - self._refused
            self.counters["statuses"] += len(statuses)
        self._ack(batch)
        return True

    # ---- lifecycle ------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {**self.counters, "queue": self.queue.qsize()}

    def run(self) -> None:
        """Until stop_event: connect (paho retries forever), batch, commit, acknowledge."""
        if self.db is None:
            self.db = open_db(self.cfg.db["url"], self.cfg.db_password)
        log.info("collecting %s and %s from %s into %s", self.topic_results, self.topic_status, self.where, self.db.url)
        b = self.cfg.broker
        self.client.connect_async(b["host"], b["port"], keepalive=b["keepalive"], clean_start=False,
                                  properties=self._connect_properties())
        self.client.loop_start()
        next_stats = time.monotonic() + STATS_EVERY_S
        try:
            while not self.stop_event.is_set():
                batch = self._take_batch()
                if batch and not self.process(batch):
                    break
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + STATS_EVERY_S
                    log.info("collector stats %s", self.stats())
        finally:
            self.stop_event.set()
            self.client.disconnect()  # keeps the session (expiry from CONNECT): the rest comes back
            self.client.loop_stop()
            if self.db is not None:
                self.db.close()
            log.info("collector stopped %s", self.stats())


def run(cfg: CollectorConfig) -> int:
    collector = Collector(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: collector.stop_event.set())
    collector.run()
    return 0
