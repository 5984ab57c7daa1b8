"""MQTT sink: every result goes to a durable outbox first, a sender thread forwards the outbox
to the broker in id order and deletes an entry only when the broker acknowledged it.

Topics (all built from config, never from a payload):
  {topic_prefix}/{device_id}/result   one compact UTF-8 JSON result per message (qos from config)
  {topic_prefix}/{device_id}/status   retained: {"state": "online", "version", "device_id", "ts",
                                      ...status_provider()} on connect and every status_interval_s;
                                      {"state": "offline", ...} as Last Will and on clean close
  {topic_prefix}/{device_id}/cmd      subscribed: {"cmd": "trigger"|"reload"|...} or a bare word
  {topic_prefix}/{device_id}/reply    not retained: {"cmd", "ts", ...handler's reply} for each
                                      command but "status", which re-publishes the status instead

Delivery is at-least-once with qos 1/2: after a reconnect, or after a restart of the service,
results that were not acknowledged are published again, so a subscriber can see an id twice and
must dedupe by `id` (ids strictly increase per device and are never reused). The first arrival
of each id is in id order: a new result is not put on the wire while older ones from a broken
connection are still being re-sent.

An MQTT 5 broker may refuse a result (PUBACK reason >= 0x80, e.g. its ACL denies the topic):
the result stays in the outbox, state() shows the error and counts it in "rejected", and the
sender retries from the oldest entry every few seconds, so fixing the ACL loses nothing.

With qos 0 there is no acknowledgement: a result leaves the outbox once paho has written it to
the socket; if the connection dies right then it is lost (at-most-once). Use qos >= 1 in plants.

Threads: paho's network thread (loop_start/loop_stop) and one sender thread; close() joins
both. paho callbacks only record events and wake the sender; every outbox read/delete and every
publish happens in the sender thread, which is why a PUBACK can never be matched before the
publish that caused it was registered.

Every way a connection attempt can fail is one log line naming the broker and the reason:
refused (CONNACK), unreachable (TCP/TLS), closed by the broker before CONNACK (it rejected the
CONNECT, e.g. a control character in the client id or will topic), no CONNACK within
keepalive seconds (not an MQTT broker, or it expects TLS), a CONNECT paho cannot even encode
(a string over 65,535 bytes). An exception that would end paho's network thread is logged and
the thread is started again, so the sink never silently stops trying.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import socket
import sqlite3
import ssl
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import paho.mqtt.client as mqtt

import edge_runtime
from edge_runtime.outbox import Outbox
from edge_runtime.sinks.mqtt_commands import BadCommand, parse_command, preview
from edge_runtime.sinks.mqtt_options import DEFAULTS, KEYS, TLS_DEFAULTS, TLS_KEYS, TYPES, resolve_options

# The config layer reads DEFAULTS, KEYS, TYPES, TLS_DEFAULTS (types of tls.*), TLS_KEYS, and
# calls resolve_options for value checks.
__all__ = ["MqttSink", "DEFAULTS", "KEYS", "TYPES", "TLS_DEFAULTS", "TLS_KEYS", "resolve_options", "encode_result"]

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 5  # a line stops in seconds; don't wait minutes for a broker that came back
MQTT_STRING_MAX = 65535  # bytes in any MQTT string (client id, topic, username): a 2-byte length
REPLIES_KEPT = 64  # command replies waiting for a connection; older ones are dropped


def _connect_problem(client_id: str, will_topic: str, username: str | None) -> str | None:
    """Why a broker would reject our CONNECT, if the reason is in the strings we send: MQTT
    forbids strings over 65,535 bytes, and brokers (mosquitto) close the connection without a
    CONNACK on control characters or noncharacters ("Malformed UTF-8")."""
    for what, s in (("client id", client_id), ("will/status topic", will_topic), ("username", username)):
        if s is None:
            continue
        n = len(s.encode("utf-8", "surrogatepass"))
        if n > MQTT_STRING_MAX:
            return f"the {what} is {n} bytes, MQTT allows at most {MQTT_STRING_MAX} (check device_id/client_id)"
        for c in s:
            o = ord(c)
            if o < 0x20 or 0x7F <= o <= 0x9F or 0xD800 <= o <= 0xDFFF or 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFE) == 0xFFFE:
                return f"the {what} {s[:60]!r} contains U+{o:04X}, which brokers reject as malformed UTF-8"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(v: Any) -> Any:
    # NaN/Infinity are not JSON; a strict subscriber would reject the whole result.
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def encode_result(result: dict, default: Callable[[Any], Any] | None = None) -> bytes:
    """Compact JSON in UTF-8. Control characters (NUL, ESC, ...) in decoded text are escaped by
    JSON itself, so whatever a QR code contains stays inside the payload."""
    try:
        s = json.dumps(result, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=default)
    except ValueError:
        s = json.dumps(_finite(result), separators=(",", ":"), ensure_ascii=False, default=default)
    try:
        return s.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a lossy decode: \u-escape them instead
        return json.dumps(_finite(result), separators=(",", ":"), ensure_ascii=True, default=default).encode("ascii")


class _Client(mqtt.Client):
    """paho's client, remembering why the last TCP/TLS connect attempt failed: paho's
    on_connect_fail callback does not say, and "connection refused" and "certificate verify
    failed" need different fixes by whoever reads the log. Also remembers when CONNECT went
    out (to notice a missing CONNACK), and keeps its network thread from dying silently."""

    last_connect_error: BaseException | None = None
    connect_sent_at: float | None = None  # monotonic time of the CONNECT not yet answered
    on_crash: Callable[[BaseException], None] | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        self.connect_sent_at = None
        try:
            rc = super().reconnect()
        except OSError as e:
            self.last_connect_error = e
            raise
        except Exception as e:  # noqa: BLE001
            # e.g. struct.error from a 70,000-character client id. paho retries only after an
            # OSError; anything else would end its network thread for good.
            self.last_connect_error = e
            raise OSError(f"cannot send CONNECT: {type(e).__name__}: {e}") from e
        self.connect_sent_at = time.monotonic()
        return rc

    def loop_forever(self, timeout: float = 1.0, retry_first_connection: bool = False) -> mqtt.MQTTErrorCode:
        # paho's loop_start thread runs this; an exception escaping it (a callback bug, an
        # unexpected paho error) would end the thread with a traceback on stderr and no more
        # reconnects. Report it instead; the sink starts a new loop.
        try:
            return super().loop_forever(timeout, retry_first_connection)
        except Exception as e:  # noqa: BLE001
            if self.on_crash is None:
                raise
            self.on_crash(e)
            return mqtt.MQTTErrorCode.MQTT_ERR_UNKNOWN


class MqttSink:
    kind = "mqtt"

    def __init__(
        self,
        name: str,
        device_id: str,
        options: dict,
        *,
        status_provider: Callable[[], dict] | None = None,
        command_handler: Callable[[dict], Any] | None = None,
    ) -> None:
        """`options`: see mqtt_options.DEFAULTS. `status_provider()` returns extra fields for
        the retained online status (counters, model); `command_handler(cmd)` gets each valid
        command dict, on paho's network thread, so it must return quickly. Its return value
        (a dict, or None for no reply) is published on the reply topic; for "status" the
        status itself is published instead."""
        self.name = name
        self.device_id = device_id
        self.options = o = resolve_options(name, device_id, options)
        self.status_provider = status_provider
        self.command_handler = command_handler
        base = f"{o['topic_prefix']}/{device_id}"
        self.topic_result = f"{base}/result"
        self.topic_status = f"{base}/status"
        self.topic_cmd = f"{base}/cmd"
        self.topic_reply = f"{base}/reply"
        self.qos: int = o["qos"]
        self.max_inflight: int = o["max_inflight"]
        self.where = f"{o['host']}:{o['port']}"
        # paho drops a connection without CONNACK after keepalive s; we say so at the same time.
        self.connack_timeout_s = max(5, o["keepalive"])

        self._outbox: Outbox | None = None
        self._outbox_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._started = False
        self._closed = False
        self._left_queued: int | None = None

        # Written by paho callbacks, read by the sender (deque appends/pops are atomic).
        self._acks: collections.deque[tuple[int, Any]] = collections.deque()
        self._connected = False
        self._disconnects = 0
        self._status_due = False
        self._replies: collections.deque[bytes] = collections.deque(maxlen=REPLIES_KEPT)
        # Other topics this device follows (the model rollout channel): topic -> handler(payload),
        # called on paho's network thread, so a handler only hands the message over.
        self._listeners: dict[str, Callable[[bytes], None]] = {}
        self._crashed: BaseException | None = None
        self.last_error: str | None = None

        # Owned by the sender thread (and by close() once the sender is joined).
        self._inflight: dict[int, int] = {}  # paho mid -> result id
        self._cursor: int | None = None       # highest result id handed to paho
        self.delivered = 0
        self.rejected = 0  # refusals by an MQTT 5 broker (PUBACK reason >= 0x80); retried
        self._rewind = False
        self._pause_until = 0.0
        self._full_logged = False

        self.client = self._make_client()

    # ---- setup ---------------------------------------------------------------------------
    def _make_client(self) -> _Client:
        o = self.options
        proto = mqtt.MQTTv5 if o["protocol"] == "5" else mqtt.MQTTv311
        kw: dict[str, Any] = {"client_id": o["client_id"], "protocol": proto}
        if proto == mqtt.MQTTv311:
            # The outbox, not the broker session, is what survives us; a clean session also
            # stops the broker from piling up commands for a device that is gone.
            kw["clean_session"] = True
        c = _Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
        if o["username"]:
            c.username_pw_set(o["username"], o["password"])
        tls = o["tls"]
        if tls is not None:
            try:
                c.tls_set(ca_certs=tls["ca_file"], certfile=tls["cert_file"], keyfile=tls["key_file"],
                          cert_reqs=ssl.CERT_REQUIRED)
            except (OSError, ssl.SSLError, ValueError) as e:
                raise ValueError(f"mqtt sink {self.name!r}: tls files could not be loaded: {e}") from None
            if tls["insecure"]:
                c.tls_insecure_set(True)
        c.will_set(self.topic_status, self._status_payload("offline", ts=False), qos=1, retain=True)
        c.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        # Our own limit is max_inflight; paho's must never be the one that bites, or its
        # internal queue would reorder re-sends after a reconnect.
        c.max_inflight_messages_set(self.max_inflight + 16)
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        c.on_crash = self._on_crash
        return c

    def _open_outbox(self) -> Outbox:
        with self._outbox_lock:
            if self._outbox is None:
                o = self.options
                try:
                    self._outbox = Outbox(o["outbox"], max_mb=o["outbox_max_mb"], policy=o["outbox_policy"])
                except (OSError, sqlite3.Error) as e:
                    # sqlite's "unable to open database file" does not say which file.
                    raise RuntimeError(f"mqtt sink {self.name!r}: cannot open outbox {o['outbox']}: {e}") from None
            return self._outbox

    # ---- Sink API ------------------------------------------------------------------------
    def start(self) -> None:
        """Never raises because the broker is down: we start disconnected, queue in the
        outbox, and paho keeps retrying with backoff (1 s doubling to 5 s)."""
        if self._started:
            return
        self._open_outbox()
        self._started = True
        self.client.connect_async(self.options["host"], self.options["port"], keepalive=self.options["keepalive"])
        self.client.loop_start()
        self._sender = threading.Thread(target=self._run_sender, name=f"mqtt-sender-{self.name}", daemon=True)
        self._sender.start()

    def emit(self, result: dict) -> None:
        """Durable before anything else: the result is committed to the outbox (fsync) before
        this returns; the sender thread does the network part."""
        if self._closed:
            raise RuntimeError(f"mqtt sink {self.name!r} is closed")
        outbox = self._outbox or self._open_outbox()
        dropped_before = outbox.dropped
        outbox.put(int(result["id"]), encode_result(result))
        if outbox.dropped != dropped_before and not self._full_logged:
            self._full_logged = True
            log.warning("mqtt sink %s: outbox %s is full (%s MB), policy %s drops results; counted in state()['dropped']",
                        self.name, self.options["outbox"], self.options["outbox_max_mb"], self.options["outbox_policy"])
        self._wake.set()

    def listen(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Subscribe to `topic` (QoS 1, again on every connect; retained messages come with it)."""
        self._listeners[topic] = handler
        if self._connected:
            self.client.subscribe(topic, qos=1)

    def state(self) -> dict:
        outbox = self._outbox
        return {
            "connected": self._connected,
            "queued": self._left_queued if self._left_queued is not None else (outbox.depth() if outbox else 0),
            "delivered": self.delivered,
            "dropped": outbox.dropped if outbox is not None else 0,
            "rejected": self.rejected,
            "inflight": len(self._inflight),
            "last_error": self.last_error,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Flush what we can within `timeout` while connected, publish the retained offline
        status, disconnect, join both threads, close the outbox. Unsent results stay in the
        outbox file for the next start."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + max(timeout, 0.0)
        reserve = min(1.5, timeout * 0.3)  # time kept for the offline status and disconnect
        outbox = self._outbox
        if self._started and outbox is not None:
            while self._connected and time.monotonic() < deadline - reserve:
                if outbox.depth() == 0 and not self._inflight:
                    break
                self._wake.set()
                time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        if self._sender is not None:
            self._sender.join(max(deadline - time.monotonic(), 1.0))
        if self._started:
            if self._connected:
                try:
                    info = self.client.publish(self.topic_status, self._status_payload("offline"), qos=1, retain=True)
                    info.wait_for_publish(max(min(deadline - time.monotonic(), 2.0), 0.2))
                except (RuntimeError, ValueError) as e:
                    log.warning("mqtt sink %s: could not publish offline status to %s: %s", self.name, self.where, e)
            self.client.disconnect()
            self.client.loop_stop()
            self._connected = False
            self._drain_acks()  # PUBACKs that arrived while we were stopping: not re-sent next time
        self._inflight.clear()
        if outbox is not None:
            self._left_queued = outbox.depth()  # state() after close: what the next start will send
            outbox.close()

    # ---- paho callbacks (network thread): record and wake, nothing slow ------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.connect_sent_at = None
        if reason_code.is_failure:
            why = str(reason_code).lower()
            if why in ("not authorized", "bad user name or password"):
                why += " (check username and password/password_env)"
            elif problem := self._connect_problem():
                why += f": {problem}"
            self._set_error(f"mqtt broker {self.where} refused the connection: {why}")
            return
        self._connected = True
        log.info("mqtt sink %s: connected to %s", self.name, self.where)  # one line per connect
        self.last_error = None
        self._logged_error = None
        client.subscribe(self.topic_cmd, qos=1)
        for topic in list(self._listeners):
            client.subscribe(topic, qos=1)
        self._status_due = True
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        e = client.last_connect_error
        if isinstance(e, ssl.SSLCertVerificationError):
            why = f"TLS certificate verification failed: {e.verify_message} (check tls.ca_file)"
        elif isinstance(e, ssl.SSLError):
            why = f"TLS handshake failed: {e.reason or e}"
        elif isinstance(e, ConnectionRefusedError):
            why = "connection refused (is the broker running?)"
        elif e is not None and not isinstance(e, OSError):  # paho could not encode our CONNECT
            why = self._connect_problem() or f"{type(e).__name__}: {e}"
            self._set_error(f"mqtt broker {self.where}: cannot send CONNECT: {why}")
            return
        elif e is not None:
            why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        else:
            why = "unknown error"
        self._set_error(f"mqtt broker {self.where} unreachable: {why}")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected
        self._connected = False
        self._disconnects += 1
        sent_at, client.connect_sent_at = client.connect_sent_at, None
        if self._stop.is_set():
            pass  # our own close()
        elif was:
            # paho reports a dropped TCP connection as "unspecified error"; say what it means.
            why = "the broker closed the connection or the network failed" \
                if reason_code == 128 else str(reason_code).lower()
            self._set_error(f"mqtt broker {self.where} connection lost: {why}")
        elif sent_at is not None and reason_code == 141:  # paho's keepalive timer, before CONNACK
            self._set_error(self._no_connack())
        elif sent_at is not None:
            # mosquitto closes the socket without a CONNACK on a CONNECT it cannot parse.
            why = self._connect_problem() or "see the broker's log for why it rejected our CONNECT"
            self._set_error(f"mqtt broker {self.where} closed the connection before CONNACK: {why}")
        self._wake.set()

    def _on_crash(self, e: BaseException) -> None:
        """paho's network thread is ending because of `e`; the sender starts a new one."""
        self._crashed = e
        self._connected = False
        self._disconnects += 1
        self._wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._acks.append((mid, reason_code))
        self._wake.set()

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        """Runs on paho's network thread: command_handler must only hand the command over
        (e.g. put it on a queue), or PUBACKs and keepalives wait behind it."""
        listener = self._listeners.get(msg.topic)
        if listener is not None:
            try:
                listener(bytes(msg.payload))
            except Exception as e:  # noqa: BLE001 - never the network thread's end
                log.error("mqtt sink %s: handling %s failed: %s: %s", self.name, msg.topic, type(e).__name__, e)
            return
        if msg.retain:
            # A retained command would fire again on every reconnect (a stale "LON" or
            # "reload" hours later); commands are events, so only live ones count.
            if msg.payload:
                log.warning("mqtt sink %s: ignored retained command on %s (clear it by publishing an empty "
                            "retained message): %s", self.name, msg.topic, preview(msg.payload))
            return
        try:
            cmd = parse_command(msg.payload)
        except BadCommand as e:
            log.warning("mqtt sink %s: ignored command on %s: %s: %s", self.name, msg.topic, e, preview(msg.payload))
            return
        if self.command_handler is None:
            log.info("mqtt sink %s: command %r received but no handler is set", self.name, cmd.get("cmd"))
            return
        try:
            reply = self.command_handler(cmd)
        except Exception as e:  # noqa: BLE001 - a handler bug must not kill the network thread
            log.error("mqtt sink %s: command %r failed: %s: %s", self.name, cmd.get("cmd"), type(e).__name__, e)
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        # Publishing is the sender's job (see the threading notes): only queue and wake.
        if str(cmd["cmd"]).strip().lower() == "status":
            self._status_due = True  # the same payload as the retained status, fresh
        elif reply is not None:
            body: dict[str, Any] = {"cmd": cmd["cmd"], "ts": _now()}
            for k, v in (reply.items() if isinstance(reply, dict) else [("reply", reply)]):
                body.setdefault(k, v)
            self._replies.append(encode_result(body, default=str))
        self._wake.set()

    _logged_error: str | None = None

    def _set_error(self, msg: str) -> None:
        """Keep the newest error in state(); log a line only when it changes, so a broker down
        for a night is one line, not ten thousand."""
        self.last_error = msg
        if msg != self._logged_error:
            self._logged_error = msg
            log.error("%s (sink %s; retrying, results stay in the outbox)", msg, self.name)

    def _connect_problem(self) -> str | None:
        o = self.options
        return _connect_problem(o["client_id"], self.topic_status, o["username"])

    def _no_connack(self) -> str:
        return (f"mqtt broker {self.where}: no CONNACK within {self.connack_timeout_s} s "
                f"(is it an MQTT broker? TLS expected?)")

    def _check_network_thread(self) -> None:
        """Sender thread: restart paho's loop if it died, give up on a CONNECT nobody answers."""
        e, self._crashed = self._crashed, None
        if e is not None and not self._stop.is_set():
            self._set_error(f"mqtt broker {self.where}: paho's network thread stopped on {type(e).__name__}: {e}; "
                            f"restarting it")
            self.client.loop_stop()  # joins the ending thread, so loop_start may start a new one
            if self._stop.wait(RECONNECT_MIN_S):  # a bug that strikes on every connect must not spin
                return
            self.client.connect_async(self.options["host"], self.options["port"], keepalive=self.options["keepalive"])
            self.client.loop_start()
        sent_at = self.client.connect_sent_at
        if sent_at is not None and not self._connected and time.monotonic() - sent_at >= self.connack_timeout_s:
            self.client.connect_sent_at = None
            self._set_error(self._no_connack())
            sock = self.client.socket()
            if sock is not None:
                # paho's loop then reads EOF and reconnects with its backoff. The plain socket
                # method: ssl.SSLSocket.shutdown would change TLS state under paho's feet.
                try:
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed

    # ---- sender thread -------------------------------------------------------------------
    def _status_payload(self, state: str, ts: bool = True) -> bytes:
        d: dict[str, Any] = {"state": state, "version": edge_runtime.__version__, "device_id": self.device_id}
        if ts:
            d["ts"] = _now()
        if state == "online" and self.status_provider is not None:
            try:
                extra = self.status_provider() or {}
            except Exception as e:  # noqa: BLE001 - status is best effort, results are not
                log.warning("mqtt sink %s: status_provider failed: %s: %s", self.name, type(e).__name__, e)
                extra = {}
            for k, v in extra.items():
                d.setdefault(k, v)
        return encode_result(d, default=str)  # a provider returning e.g. a Path must not stop status

    def _run_sender(self) -> None:
        seen_disconnects = 0
        hold = False
        next_status = 0.0
        interval = float(self.options["status_interval_s"])
        while not self._stop.is_set():
            self._wake.wait(timeout=max(0.01, min(1.0, next_status - time.monotonic())) if self._connected else 1.0)
            self._wake.clear()
            try:
                self._check_network_thread()
                self._drain_acks()
                d = self._disconnects
                if d != seen_disconnects:
                    seen_disconnects = d
                    if self.qos == 0:
                        self._inflight.clear()  # paho drops unsent qos-0 packets on reconnect
                    # paho re-sends its unacknowledged messages after CONNACK; nothing new goes
                    # out before they are through, so first arrivals stay in id order.
                    hold = bool(self._inflight)
                if not self._connected:
                    continue
                now = time.monotonic()
                if self._status_due or now >= next_status:
                    self._status_due = False
                    next_status = now + interval
                    self.client.publish(self.topic_status, self._status_payload("online"), qos=1, retain=True)
                while self._replies:
                    self.client.publish(self.topic_reply, self._replies.popleft(), qos=1)
                if hold and not self._inflight:
                    hold = False
                if self._rewind and not self._inflight and time.monotonic() >= self._pause_until:
                    self._rewind = False  # nothing in flight: _fill restarts from the oldest entry
                if not hold and not self._rewind:
                    self._fill(seen_disconnects)
            except (OSError, sqlite3.Error) as e:  # disk full, I/O error: expected, one line
                log.error("mqtt sink %s: outbox %s: %s: %s (retrying in 1 s; results stay queued)",
                          self.name, getattr(self._outbox, "path", "?"), type(e).__name__, e)
                self._stop.wait(1.0)
            except Exception:  # noqa: BLE001 - a bug: keep the thread alive, but show where
                log.exception("mqtt sink %s: sender error", self.name)
                self._stop.wait(1.0)

    def _fill(self, seen_disconnects: int) -> None:
        room = self.max_inflight - len(self._inflight)
        if room <= 0 or self._outbox is None:
            return
        # With nothing in flight, restart from the oldest entry: anything still in the outbox
        # then is unacknowledged and not held by paho (e.g. qos 0 lost on a reconnect).
        after = self._cursor if self._inflight else None
        for rid, payload in self._outbox.peek(room, after=after):
            if not self._connected or self._disconnects != seen_disconnects or self._stop.is_set():
                return
            info = self.client.publish(self.topic_result, payload, qos=self.qos)
            if info.rc == mqtt.MQTT_ERR_SUCCESS or (info.rc == mqtt.MQTT_ERR_NO_CONN and self.qos > 0):
                # NO_CONN with qos > 0: paho keeps the message and sends it after reconnecting.
                self._inflight[info.mid] = rid
                self._cursor = rid
            else:
                return  # not accepted by paho; it stays in the outbox and is retried

    def _drain_acks(self) -> None:
        while self._acks:
            mid, reason = self._acks.popleft()
            rid = self._inflight.pop(mid, None)
            if rid is None:
                continue  # a status message
            if getattr(reason, "is_failure", False):
                # An MQTT 5 broker refused the result (e.g. its ACL does not allow our topic).
                # The topic is the same for every result, so this is a broker/config problem,
                # not a bad result: keep it in the outbox, pause, and retry from the oldest
                # entry, so fixing the ACL (mosquitto reloads it on SIGHUP) loses nothing.
                self.rejected += 1
                self._pause_until = time.monotonic() + RECONNECT_MAX_S
                self._rewind = True
                self._set_error(f"mqtt broker {self.where} rejected results on {self.topic_result}: "
                                f"{str(reason).lower()} (check the broker ACL)")
                continue
            self.delivered += 1
            if self.last_error is not None and " rejected results on " in self.last_error:
                self.last_error = self._logged_error = None
            if self._outbox is not None:
                self._outbox.ack(rid)
