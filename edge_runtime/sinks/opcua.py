"""OPC UA sink: an OPC UA server presenting this device as an OPC 30010 "AutoID" optical reader.

A live view, not a delivery path: results that arrive while no client is subscribed are only
visible as LastScanData, and the hand-over queue is bounded (`queue_size`; a full queue drops
and counts). The durable paths are MQTT and serial, which keep an outbox.

One thread runs the asyncua server on its own asyncio loop. emit() only appends to a bounded
queue and wakes that loop, so a slow, hung or hostile client never reaches the capture loop.

Options (``DEFAULTS``):

- host "127.0.0.1", port 4840 (0: any free port, see state()["port"]).
- security "none" | "Basic256Sha256_Sign" | "Basic256Sha256_SignAndEncrypt": the endpoint
  offered. "none" is allowed on loopback only; the others need certificate + private_key
  (PEM or DER paths).
- username_env / password_env: names of environment variables holding the one user's
  credentials (the values never live in the config file).
- Anonymous sessions are accepted only when bound to loopback; any other host needs
  username_env + password_env and a secured endpoint (refused at config time otherwise).
- max_clients 8: TCP connections beyond it are refused.
- scan_timeout_ms 1000: how long Scan waits when its ScanSettings.Duration is 0.
- device_name "": the DeviceName variable (default: the device_id).
- queue_size 10000: results waiting for the server thread; beyond it they are dropped and counted.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import queue
import threading
import time
from typing import Any, Callable

log = logging.getLogger(__name__)

SECURITIES = ("none", "Basic256Sha256_Sign", "Basic256Sha256_SignAndEncrypt")

DEFAULTS: dict = {
    "host": "127.0.0.1",
    "port": 4840,
    "security": "none",
    "username_env": "",
    "password_env": "",
    "certificate": "",
    "private_key": "",
    "max_clients": 8,
    "scan_timeout_ms": 1000,
    "device_name": "",
    "queue_size": 10000,
}
KEYS: set[str] = set(DEFAULTS)
REQUIRED: set[str] = set()
TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,), "port": (int,), "security": (str,), "username_env": (str,), "password_env": (str,),
    "certificate": (str,), "private_key": (str,), "max_clients": (int,), "scan_timeout_ms": (int,),
    "device_name": (str,), "queue_size": (int,),
}
RANGES: dict[str, tuple[float, float]] = {
    "port": (0, 65535),
    "max_clients": (1, 1000),
    "scan_timeout_ms": (1, 600_000),
    "queue_size": (1, 1_000_000),
}
STATUS_INTERVAL_S = 1.0  # DeviceStatus and counters refresh
START_TIMEOUT_S = 30.0  # asyncua builds its standard address space first (a few s on ARM)
CLOSE_GRACE_S = 0.5
MAX_EVENT_QUEUE = 1000  # events a monitored item may hold between two publish responses
MAX_UNACKED = 100  # notification messages kept per subscription for republish
_LOG_ONCE_MAX = 256  # distinct "logged once" messages remembered


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def validate_options(name: str, device_id: str, options: dict) -> dict:
    """Merge over DEFAULTS and check values and the security rules without opening anything.
    Raises ValueError with one line naming the sink and the key."""
    where = f"opcua sink {name!r}"
    unknown = set(options) - KEYS
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KEYS))}")
    o = {**DEFAULTS, **options}

    def bad(key: str, want: str) -> ValueError:
        return ValueError(f"{where} option {key!r} must be {want}, got {o[key]!r}")

    for k, types in TYPES.items():
        if isinstance(o[k], bool) or not isinstance(o[k], types):
            raise bad(k, "a string" if types == (str,) else "an integer")
    for k, (lo, hi) in RANGES.items():
        if not lo <= o[k] <= hi:
            raise bad(k, f"an integer in {lo:g}..{hi:g}")
    if not o["host"]:
        raise bad("host", "an address to listen on, e.g. 127.0.0.1")
    if o["security"] not in SECURITIES:
        raise bad("security", "one of " + ", ".join(SECURITIES))
    if bool(o["username_env"]) != bool(o["password_env"]):
        given, missing = ("username_env", "password_env") if o["username_env"] else ("password_env", "username_env")
        # named after the key the user set (that is the line they will look at), then the missing one
        raise ValueError(f"{where} option {given!r} needs {missing!r} too: username_env and password_env go together")
    for k in ("username_env", "password_env"):
        if o[k] and o[k] not in os.environ:
            raise ValueError(f"{where} option {k!r}: environment variable {o[k]} is not set")
    if bool(o["certificate"]) != bool(o["private_key"]):
        given, missing = ("certificate", "private_key") if o["certificate"] else ("private_key", "certificate")
        raise ValueError(f"{where} option {given!r} needs {missing!r} too: certificate and private_key go together")
    for k in ("certificate", "private_key"):
        if o[k] and not os.path.isfile(o[k]):
            raise ValueError(f"{where} option {k!r}: no such file {o[k]}")
    if o["security"] != "none" and not o["certificate"]:
        raise ValueError(f"{where} option 'security' {o['security']!r} needs certificate and private_key")
    if not is_loopback(o["host"]):
        # Beyond loopback nobody is anonymous, and no password crosses the wire in clear.
        if not o["username_env"]:
            raise ValueError(f"{where} option 'host' {o['host']!r} is not loopback: anonymous access is "
                             "refused there, set username_env and password_env")
        if o["security"] == "none":
            raise ValueError(f"{where} option 'security' must be Basic256Sha256_SignAndEncrypt (or _Sign) "
                             f"when host {o['host']!r} is not loopback; set certificate and private_key")
    return o


class _Users:
    """asyncua user manager: anonymous only when allowed (loopback), else the one configured user."""

    def __init__(self, allow_anonymous: bool, username: str | None, password: str | None) -> None:
        self.allow_anonymous = allow_anonymous
        self.username = username
        self.password = password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> Any:
        from asyncua.crypto.permission_rules import User, UserRole

        if username is None:
            # Anonymous: X509 user tokens never get here (not among the identity tokens
            # offered); `certificate` is then the secure channel's client certificate.
            return User(role=UserRole.User) if self.allow_anonymous else None
        if username is not None and self.username is not None and self.password is not None:
            ok = hmac.compare_digest(username.encode(), self.username.encode()) & hmac.compare_digest(
                (password or "").encode(), self.password.encode())
            return User(role=UserRole.User, name=username) if ok else None
        return None


class _AsyncuaOnce(logging.Handler):
    """asyncua logs every rejected session or bad request, with a traceback. A hostile client
    could fill the journal: each distinct message is passed on once, on one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: set[tuple[str, str]] = set()

    def emit(self, record: logging.LogRecord) -> None:
        key = (record.name, str(record.msg))
        if key in self.seen or len(self.seen) >= _LOG_ONCE_MAX:
            return
        self.seen.add(key)
        log.log(record.levelno, "asyncua (%s): %s (further ones not logged)", record.name, record.getMessage())


def _install_asyncua_log_filter() -> None:
    lg = logging.getLogger("asyncua")
    if not any(isinstance(h, _AsyncuaOnce) for h in lg.handlers):
        lg.addHandler(_AsyncuaOnce())
        lg.propagate = False
        lg.setLevel(logging.WARNING)


class OpcuaSink:
    """OPC UA server for this device: AutoID OpticalReaderDeviceType with Scan/ScanStart/ScanStop."""

    kind = "opcua"

    def __init__(self, name: str, device_id: str, options: dict, *,
                 status_provider: Callable[[], dict] | None = None,
                 trigger_handler: Callable[[str], Any] | None = None) -> None:
        self.name = name
        self.device_id = device_id
        self.opts = validate_options(name, device_id, options)
        self._status_provider = status_provider
        self._trigger_handler = trigger_handler
        self._queue: queue.SimpleQueue[dict] = queue.SimpleQueue()
        self._queued = 0  # results in _queue (SimpleQueue has no cheap bounded put)
        self._qlock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._logged: set[str] = set()
        self._scanners: list[tuple[asyncio.Future, bool, list]] = []  # waiting Scan calls
        self._scan_open = 0  # windows opened by ScanStart/Scan and not closed yet
        self._stop_timer: asyncio.TimerHandle | None = None
        self._trigger_source: str | None = None  # the service's trigger.source, when known
        self.port: int = self.opts["port"]
        self.emitted = 0
        self.events = 0
        self.dropped = 0
        self.scan_calls = 0
        self.bad_requests = 0
        self.grades: dict[str, int] = {}  # reads by print-quality grade (grade_A .. ungraded)
        self.last_error: str | None = None

    # -- Sink protocol ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server thread and wait until it listens: a port in use or an unreadable
        certificate is a start error (the service reports it naming the sink)."""
        if self._thread is not None:
            return
        _install_asyncua_log_filter()
        self._thread = threading.Thread(target=self._run, name=f"opcua-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S):
            raise OSError(f"OPC UA server on {self.opts['host']}:{self.opts['port']} did not start within {START_TIMEOUT_S:g} s")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            raise OSError(f"OPC UA server on {self.opts['host']}:{self.opts['port']}: {self._start_error}")

    def emit(self, result: dict) -> None:
        """Hand the result to the server thread; never waits for it."""
        with self._qlock:
            if self._queued >= self.opts["queue_size"]:
                self.dropped += 1
                full = True
            else:
                self._queued += 1
                full = False
        if full:
            self._once("queue_full", logging.WARNING, "opcua sink %s: queue full (%d): results dropped (counted in "
                       "'dropped'); OPC UA is a live view, MQTT/serial are the durable paths",
                       self.name, self.opts["queue_size"])
            return
        self._queue.put(result)
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:
                pass  # loop closed: the sink is closing

    def state(self) -> dict:
        return {
            "connected": self._clients() > 0,
            "clients": self._clients(),
            "port": self.port,
            "queued": self._queued,
            "delivered": self.events,
            "emitted": self.emitted,
            "dropped": self.dropped,
            "scan_calls": self.scan_calls,
            "bad_requests": self.bad_requests,
            "last_error": self.last_error,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Publish what is queued (up to `timeout`), then stop the server and its thread."""
        if self._thread is None:
            return
        deadline = time.monotonic() + timeout
        while self._queued and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        if self._clients() and self._thread.is_alive():
            # Subscribers get the last events at their next publish cycle: give them one.
            time.sleep(min(CLOSE_GRACE_S, max(0.0, deadline - time.monotonic())))
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            try:
                loop.call_soon_threadsafe(stop.set)
            except RuntimeError:
                pass
        self._thread.join(max(1.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("opcua sink %s: server thread did not stop within %.1f s", self.name, timeout)
        self._thread = None

    # -- server thread ---------------------------------------------------------------------------

    def _clients(self) -> int:
        server = getattr(self, "_server", None)
        try:
            return len(server.bserver.clients) if server is not None and server.bserver is not None else 0
        except AttributeError:
            return 0

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported by start() or logged once
            if not self._ready.is_set():
                self._start_error = exc
                self._ready.set()
            else:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("opcua sink %s: server stopped: %s", self.name, self.last_error)

    async def _main(self) -> None:
        from asyncua import Server

        self._loop = asyncio.get_running_loop()
        self._wake, self._stop = asyncio.Event(), asyncio.Event()
        server = await self._make_server(Server)
        self._server = server
        try:
            await server.start()
        except OSError as exc:
            raise OSError(exc.strerror or str(exc)) from None
        bs = server.bserver
        self.port = bs.port if bs is not None else self.port
        self._ready.set()
        log.info("opcua sink %s: listening on opc.tcp://%s:%d (security %s, anonymous %s)", self.name,
                 self.opts["host"], self.port, self.opts["security"], "yes" if is_loopback(self.opts["host"]) else "no")
        status_task = asyncio.create_task(self._status_loop())
        try:
            while not self._stop.is_set():
                await self._drain()
                wake = asyncio.create_task(self._wake.wait())
                stop = asyncio.create_task(self._stop.wait())
                await asyncio.wait({wake, stop}, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                stop.cancel()
                self._wake.clear()
            await self._drain()
        finally:
            status_task.cancel()
            for fut, _, _ in self._scanners:
                if not fut.done():
                    fut.cancel()
            await server.stop()

    async def _make_server(self, server_cls: Any) -> Any:
        from asyncua import ua

        from edge_runtime.sinks import opcua_model as model

        o = self.opts
        user = os.environ.get(o["username_env"]) if o["username_env"] else None
        password = os.environ.get(o["password_env"]) if o["password_env"] else None
        anonymous = is_loopback(o["host"])
        server = server_cls(user_manager=_Users(anonymous, user, password))
        await server.init()
        # Bounds for a small board: asyncua's defaults let each subscription hold 10,000
        # queued events and 5,000 unacknowledged messages, for up to 1,000 subscriptions.
        iserver = server.iserver
        iserver.max_connections = o["max_clients"]
        iserver.max_subscriptions = 4 * o["max_clients"]
        iserver.max_monitored_item_queue_size = MAX_EVENT_QUEUE
        iserver.max_unacked_messages_per_subscription = MAX_UNACKED
        iserver.max_pending_activation_seconds = 10.0
        server.set_endpoint(f"opc.tcp://{_url_host(o['host'])}:{o['port']}/edge-runtime/")
        server.set_server_name(f"edge-runtime {self.device_id}")
        await server.set_application_uri(f"urn:edge-runtime:{self.device_id}")
        policies = []
        if o["security"] == "none":
            policies.append(ua.SecurityPolicyType.NoSecurity)
        if o["certificate"]:
            await server.load_certificate(o["certificate"])
            await server.load_private_key(o["private_key"])
            # Sign&Encrypt is always offered with a certificate; Sign only when asked for.
            policies.append(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
            if o["security"] == "Basic256Sha256_Sign":
                policies.append(ua.SecurityPolicyType.Basic256Sha256_Sign)
        server.set_security_policy(policies)
        tokens = [ua.AnonymousIdentityToken] if anonymous else []
        if user is not None:
            tokens.append(ua.UserNameIdentityToken)
        server.set_identity_tokens(tokens)
        self._nodes = await model.build(server, self.device_id, o["device_name"] or self.device_id, {
            "Scan": self._m_scan, "ScanStart": self._m_scan_start, "ScanStop": self._m_scan_stop})
        self._evgen = await server.get_event_generator(self._nodes.event_type, self._nodes.device)
        self._evgen.event.DeviceName = o["device_name"] or self.device_id
        return server

    async def _drain(self) -> None:
        """Publish every queued result: LastScanData & co, then one event each."""
        from asyncua import ua

        from edge_runtime.sinks import opcua_model as model

        n = self._nodes
        while True:
            try:
                result = self._queue.get_nowait()
            except queue.Empty:
                return
            with self._qlock:
                self._queued -= 1
            try:
                read = result.get("kind", "read") == "read"
                scan = [model.optical_scan_result(result)] if read else []
                if read:
                    letter = model.grade_letter(result)
                    self.grades[letter] = self.grades.get(letter, 0) + 1
                    data = scan[0].ScanData
                    value = (ua.Variant(data.ByteString, ua.VariantType.ByteString) if data.ByteString is not None
                             else ua.Variant(data.String, ua.VariantType.String))
                    await self._write(n.last_scan_data, value, any_type=True)
                    await self._write(n.last_scan_timestamp, ua.Variant(scan[0].Timestamp, ua.VariantType.DateTime))
                as_json = model.to_json(result)
                await self._write(n.last_result_json, ua.Variant(as_json, ua.VariantType.String))
                ev = self._evgen.event
                ev.ScanResult = ua.Variant(scan, ua.VariantType.ExtensionObject, is_array=True)
                ev.ResultId = ua.Variant(int(result.get("id") or 0), ua.VariantType.UInt64)
                ev.ResultKind = "read" if read else "noread"
                ev.Corners = ua.Variant(model.flat_corners(result), ua.VariantType.Double, is_array=True)
                ev.ResultJson = as_json
                text = result.get("text")
                ev.Message = ua.LocalizedText(f"read {str(text)[:200]}" if read else "noread")
                ev.Severity = 100 if read else 300
                await self._evgen.trigger(time_attr=scan[0].Timestamp if read else None)
                self.events += 1
                if read:
                    self._hand_to_scanners(scan[0])
            except Exception as exc:  # noqa: BLE001 - one bad result must not stop the view
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._once(f"publish:{type(exc).__name__}", logging.ERROR,
                           "opcua sink %s: result %s not published: %s", self.name, result.get("id"), self.last_error)
            finally:
                self.emitted += 1
            # asyncua's writes and triggers rarely suspend: yield so that a burst of results
            # cannot hold back publish responses and client requests.
            await asyncio.sleep(0)

    async def _write(self, node: Any, value: Any, any_type: bool = False) -> None:
        """Set a value the way the server does (no client-write checks). asyncua still
        refuses a value whose type differs from the current one; LastScanData is a
        BaseDataType variable (String or ByteString), so its old value is cleared first,
        in place, without notifying subscribers of the empty value."""
        from asyncua import ua

        if any_type:
            self._server.iserver.aspace[node.nodeid].attributes[ua.AttributeIds.Value].value = None
        status = await self._server.write_attribute_value(node.nodeid, ua.DataValue(value))
        if status is not None and status.is_bad():
            raise ua.UaStatusCodeError(status.value)

    async def _status_loop(self) -> None:
        from asyncua import ua

        from edge_runtime.sinks import opcua_model as model

        n = self._nodes
        while True:
            status: dict = {}
            if self._status_provider is not None:
                try:
                    status = self._status_provider() or {}
                except Exception as exc:  # noqa: BLE001 - status is best effort
                    self._once("status", logging.WARNING, "opcua sink %s: status not available: %s", self.name, exc)
            self._trigger_source = (status.get("trigger") or {}).get("source")
            source = (status.get("source") or {}).get("state")
            dev = model.ERROR if source in ("error", "down", "failed", "stalled") else (
                model.SCANNING if self._scan_open or self._scanners else model.IDLE)
            try:
                await self._write(n.device_status, ua.Variant(dev, ua.VariantType.Int32))
                values = {**{k: status.get(k, 0) for k in model.SERVICE_COUNTERS},
                          "emitted": self.emitted, "events": self.events, "dropped": self.dropped,
                          "clients": self._clients(), "scan_calls": self.scan_calls, "bad_requests": self.bad_requests,
                          **{k: self.grades.get(k, 0) for k in model.QUALITY_COUNTERS}}
                for k, node in n.counters.items():
                    v = values.get(k)
                    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                        await self._write(node, ua.Variant(v, ua.VariantType.UInt64))
            except Exception as exc:  # noqa: BLE001
                self._once("status_write", logging.WARNING, "opcua sink %s: status not written: %s", self.name, exc)
            await asyncio.sleep(STATUS_INTERVAL_S)

    # -- methods (asyncua calls them on the server loop) -----------------------------------------

    def _settings(self, method: str, args: tuple) -> tuple[float, bool] | Any:
        """(duration s, data_available) from the optional ScanSettings argument, or the
        CallMethodResult answering a bad one (BadInvalidArgument, logged once)."""
        from asyncua import ua

        if len(args) > 1:
            return self._bad(method, ua.StatusCodes.BadTooManyArguments, f"{len(args)} arguments")
        value = args[0].Value if args and isinstance(args[0], ua.Variant) else None
        if value is None:
            return self.opts["scan_timeout_ms"] / 1000.0, True
        duration = getattr(value, "Duration", None)
        available = getattr(value, "DataAvailable", None)
        if not isinstance(duration, (int, float)) or isinstance(duration, bool) or not 0 <= duration <= 3_600_000 \
                or not isinstance(available, bool):
            return self._bad(method, ua.StatusCodes.BadInvalidArgument, f"Settings {value!r}")
        seconds = (duration or self.opts["scan_timeout_ms"]) / 1000.0
        return seconds, available

    def _bad(self, method: str, code: int, what: str) -> Any:
        from asyncua import ua

        self.bad_requests += 1
        self._once(f"bad:{method}:{code}", logging.WARNING, "opcua sink %s: %s refused (%s): %s (further ones "
                   "counted in bad_requests)", self.name, method, ua.StatusCode(code).name, what)
        res = ua.CallMethodResult()
        res.StatusCode = ua.StatusCode(code)
        return res

    def _trigger(self, what: str, quiet: bool = False) -> None:
        """Open/close the service's trigger window. `quiet`: skip it when the service's
        trigger.source is known not to be opcua (Scan then just waits for the next read,
        without a warning per call that the trigger was ignored)."""
        if quiet and self._trigger_source not in (None, "opcua"):
            return
        if self._trigger_handler is not None:
            try:
                self._trigger_handler(what)
            except Exception as exc:  # noqa: BLE001 - the client still gets its answer
                self._once("trigger", logging.WARNING, "opcua sink %s: trigger handler failed: %s", self.name, exc)

    async def _m_scan_start(self, parent: Any, *args: Any) -> Any:
        from asyncua import ua

        from edge_runtime.sinks import opcua_model as model

        settings = self._settings("ScanStart", args)
        if not isinstance(settings, tuple):
            return settings
        self.scan_calls += 1
        self._scan_open = 1
        self._trigger("on")
        if self._stop_timer is not None:
            self._stop_timer.cancel()
            self._stop_timer = None
        if args and args[0].Value is not None and args[0].Value.Duration:
            # ScanStart with a Duration ends by itself, as the specification describes.
            self._stop_timer = asyncio.get_running_loop().call_later(settings[0], self._stop_scan)
        return [ua.Variant(model.SUCCESS, ua.VariantType.Int32)]

    def _stop_scan(self) -> None:
        self._stop_timer = None
        self._scan_open = 0
        self._trigger("off")

    async def _m_scan_stop(self, parent: Any, *args: Any) -> Any:
        from asyncua import ua

        if args:
            return self._bad("ScanStop", ua.StatusCodes.BadTooManyArguments, f"{len(args)} arguments")
        self.scan_calls += 1
        if self._stop_timer is not None:
            self._stop_timer.cancel()
        self._stop_scan()
        return []

    async def _m_scan(self, parent: Any, *args: Any) -> Any:
        """One synchronous scan: open a window, wait for the result(s) or the duration, close it."""
        from asyncua import ua

        from edge_runtime.sinks import opcua_model as model

        settings = self._settings("Scan", args)
        if not isinstance(settings, tuple):
            return settings
        seconds, first_only = settings
        self.scan_calls += 1
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        entry = (fut, first_only, [])
        self._scanners.append(entry)
        self._trigger("on", quiet=True)
        try:
            await asyncio.wait_for(asyncio.shield(fut), seconds)
        except asyncio.TimeoutError:
            pass
        finally:
            self._scanners.remove(entry)
            if not self._scanners and not self._scan_open:
                self._trigger("off", quiet=True)
        results = entry[2]
        status = model.SUCCESS if results else model.NO_IDENTIFIER
        return [ua.Variant(results, ua.VariantType.ExtensionObject, is_array=True),
                ua.Variant(status, ua.VariantType.Int32)]

    def _hand_to_scanners(self, scan_result: Any) -> None:
        for fut, first_only, got in self._scanners:
            if fut.done():
                continue
            got.append(scan_result)
            if first_only:
                fut.set_result(None)

    def _once(self, key: str, level: int, msg: str, *args: Any) -> None:
        """Log a kind of problem the first time only (a client repeating a bad request must
        not fill the journal); counters say how often it happened."""
        if key in self._logged or len(self._logged) >= _LOG_ONCE_MAX:
            return
        self._logged.add(key)
        log.log(level, msg, *args)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
