"""Modbus TCP sink: a Modbus server (pymodbus) a PLC polls for results, with the readers' handshake.

A result stays in the registers until the PLC writes its counter back as acknowledgement; then
the next queued result is presented. Results wait in a durable outbox (sqlite, like the serial
sink's), so none is lost while the PLC is busy, disconnected, or the service restarts.

Register map (holding registers, 0-based; also readable as input registers, FC 4)::

    0      status word: bit0 online (service running), bit1 trigger window open,
           bit2 result present, bit3 the result is a no-read, bit4 payload truncated,
           bit5 match false (reserved, 0 until the match feature exists)
    1      result counter: 1..65535 then 1 again (never 0 once a result was presented);
           0 = no result presented yet
    2..5   result id, unsigned 64-bit, big-endian word order (register 2 is the high word)
    6      payload length in bytes as presented in registers 10.. (<= 2 * payload_registers)
    7      quality grade 0..4; 0xFFFF = not available (reserved until the quality feature)
    8      ACK (the only writable register): write the counter of the result consumed; reads
           back the last acknowledged counter
    9      results queued, the presented one included (saturates at 65535)
    10..   payload, 2 bytes per register, high byte first; unused bytes are 0

Coil 0 (FC 1/5): the trigger window. Writing 1 / 0 calls trigger_handler("on" / "off") (the
service honours it when trigger.source = "modbus"); reading returns status bit1.

Options: host "127.0.0.1", port 502 as root else 5020, unit_id 1 (0 answers every unit id;
requests to another unit id get exception 0x0B), max_clients 4 (more connections are closed at
once), idle_timeout_s 60 (a connection silent that long is closed), payload_registers 64
(128 bytes; a longer payload is cut there and status bit4 set; the full payload stays in the
MQTT/jsonl results), outbox / outbox_max_mb / outbox_policy as for the serial sink.

Threads: emit() only writes the outbox (never waits for a client). One thread runs pymodbus's
asyncio server on its own loop; all register reads and writes happen there, and close() stops it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
import threading
import time
from typing import Any, Callable

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from edge_runtime.outbox import POLICIES, Outbox
from edge_runtime.sinks.serial_frame import result_payload

log = logging.getLogger(__name__)

DEFAULTS: dict = {
    "host": "127.0.0.1",
    # 502 needs root (or CAP_NET_BIND_SERVICE); the service normally runs as its own user.
    "port": 502 if os.geteuid() == 0 else 5020,
    "unit_id": 1,
    "outbox": None,
    "outbox_max_mb": 16,
    "outbox_policy": "drop_oldest",
    "max_clients": 4,
    "idle_timeout_s": 60.0,
    "payload_registers": 64,
}
KEYS = frozenset(DEFAULTS)
REQUIRED = ()
TYPES: dict[str, tuple[type, ...]] = {
    "host": (str,), "port": (int,), "unit_id": (int,), "outbox": (str,),
    "outbox_max_mb": (int, float), "outbox_policy": (str,), "max_clients": (int,),
    "idle_timeout_s": (int, float), "payload_registers": (int,),
}
# Inclusive (lo, hi) per numeric key (the config layer enforces them for the file too).
# 1477 registers hold the longest QR payload (2,953 bytes, version 40-L).
RANGES: dict[str, tuple[float, float]] = {
    "port": (1, 65535),
    "unit_id": (0, 247),
    "outbox_max_mb": (0.001, 1_000_000),
    "max_clients": (1, 64),
    "idle_timeout_s": (1, 86400),
    "payload_registers": (1, 1477),
}

# Register addresses (see the module docstring and README "Modbus TCP").
REG_STATUS, REG_COUNTER, REG_ID, REG_LENGTH, REG_QUALITY, REG_ACK, REG_QUEUED, REG_PAYLOAD = 0, 1, 2, 6, 7, 8, 9, 10
BIT_ONLINE, BIT_WINDOW, BIT_PRESENT, BIT_NOREAD, BIT_TRUNCATED, BIT_MATCH_FALSE = (1 << i for i in range(6))
QUALITY_NONE = 0xFFFF
_READ_FCS = (3, 4, 23)  # holding, input, read part of read/write multiple
_WRITE_FCS = (6, 16, 23)
_COIL_FCS = (1, 5, 15)
_LOG_INTERVAL_S = 60.0  # a misbehaving PLC is logged at most once a minute per kind of fault
_STATUS_TTL_S = 0.2  # the service status is asked at most this often (a PLC may poll at 100 Hz)
_CLOSE_STALL_S = 2.0  # close() stops waiting for a connected PLC that acknowledged nothing this long
_MAX_WRITE_BUFFER = 1 << 20  # a client that stops reading its answers is cut off past this


def validate_options(name: str, device_id: str, options: dict) -> dict:
    """Merge `options` over DEFAULTS and check them without opening anything. Raises ValueError
    with one line naming the sink and the key."""
    where = f"modbus sink {name!r}"
    unknown = set(options) - KEYS
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(KEYS))}")
    o = {**DEFAULTS, **options}
    for k, (lo, hi) in RANGES.items():
        v = o[k]
        if isinstance(v, bool) or not isinstance(v, TYPES[k]) or not lo <= v <= hi:  # NaN fails too
            want = "an integer" if TYPES[k] == (int,) else "a number"
            raise ValueError(f"{where} option {k!r} must be {want} in {lo:g}..{hi:g}, got {v!r}")
    if not isinstance(o["host"], str) or not o["host"]:
        raise ValueError(f"{where} option 'host' must be an address such as 127.0.0.1, got {o['host']!r}")
    if o["outbox"] is not None and not isinstance(o["outbox"], str):
        raise ValueError(f"{where} option 'outbox' must be a file path, got {o['outbox']!r}")
    if o["outbox_policy"] not in POLICIES:
        raise ValueError(f"{where} option 'outbox_policy' must be one of {', '.join(POLICIES)}, got {o['outbox_policy']!r}")
    return o


def encode_result(result: dict) -> bytes:
    """What the outbox keeps: a kind byte (R read, N no-read) and the full payload bytes
    (raw bytes when the code is not UTF-8). Truncation happens at presentation, so a changed
    payload_registers applies to results already queued."""
    if result.get("kind") == "noread":
        return b"N"
    return b"R" + result_payload(result, b"", "utf-8")


def payload_registers(payload: bytes, count: int) -> tuple[list[int], int, bool]:
    """`payload` as `count` registers, 2 bytes each, high byte first, zero padded.
    Returns (registers, bytes presented, truncated)."""
    cut = payload[: 2 * count]
    padded = cut.ljust(2 * count, b"\0")
    return list(struct.unpack(f">{count}H", padded)), len(cut), len(cut) < len(payload)


class _Limited:
    """Logs a recurring fault once, then at most once a minute with how often it happened."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def warn(self, key: str, msg: str, *args: Any) -> None:
        self._count[key] = self._count.get(key, 0) + 1
        now = time.monotonic()
        if now - self._last.get(key, -_LOG_INTERVAL_S) >= _LOG_INTERVAL_S:
            self._last[key] = now
            log.warning(msg + " (%d time(s) so far; logged at most once a minute)", *args, self._count[key])


class _Handler(ServerRequestHandler):
    """One client connection: refuses itself over max_clients, notes when the client last spoke
    (idle timeout) and reports exception answers (bad requests) to the sink."""

    def __init__(self, owner: ModbusTcpServer, sink: "ModbusSink") -> None:
        self._sink = sink
        self.peer = "?"
        self.last_rx = time.monotonic()
        self._last_fc = 0
        super().__init__(owner, self._trace_packet, self._trace_pdu, None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self._sink._connected(self)

    def callback_disconnected(self, exc: Exception | None) -> None:
        super().callback_disconnected(exc)
        self._sink._disconnected(self)

    def callback_data(self, data: bytes, addr: tuple | None = None) -> int:
        self.last_rx = time.monotonic()
        return super().callback_data(data, addr)

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending and len(data) >= 8:
            self._last_fc = data[7]  # MBAP header is 7 bytes; the function code follows
        return data

    def _trace_pdu(self, sending: bool, pdu: Any) -> Any:
        if sending and isinstance(pdu, ExceptionResponse):
            if pdu.function_code == 0x80 and self._last_fc:
                # pymodbus answers a function code it cannot decode with 0x80; the standard
                # answer is the request's code with the high bit set.
                pdu.function_code = (self._last_fc & 0x7F) | 0x80
            self._sink._bad_request(self.peer, pdu.function_code & 0x7F, pdu.exception_code)
        return pdu


class _QuietDecodeErrors(logging.Filter):
    """pymodbus warns on every frame it cannot decode; the sink logs those itself, rate limited,
    so a PLC sending garbage in a loop cannot fill the journal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Unable to decode")


_PYMODBUS_LOG = logging.getLogger("pymodbus.logging")
if not any(isinstance(f, _QuietDecodeErrors) for f in _PYMODBUS_LOG.filters):
    _PYMODBUS_LOG.addFilter(_QuietDecodeErrors())


class _Server(ModbusTcpServer):
    def __init__(self, sink: "ModbusSink", address: tuple[str, int]) -> None:
        # pymodbus wants a datastore at construction; the sink's own store replaces it below.
        placeholder = SimDevice(id=0, simdata=[SimData(0, datatype=DataType.REGISTERS)])
        super().__init__(placeholder, address=address)
        self._sink = sink
        self.context = sink  # the sink answers async_getValues/async_setValues itself

    def callback_new_connection(self) -> _Handler:
        return _Handler(self, self._sink)


class ModbusSink:
    """Durable, ordered delivery of results to a PLC that polls a Modbus TCP server."""

    kind = "modbus"

    def __init__(self, name: str, device_id: str, options: dict, *,
                 status_provider: Callable[[], dict] | None = None,
                 trigger_handler: Callable[[str], None] | None = None) -> None:
        self.name = name
        self.device_id = device_id
        self.opts = o = validate_options(name, device_id, options)
        self._status_provider = status_provider
        self._trigger_handler = trigger_handler
        if o["outbox"]:
            self._outbox = Outbox(o["outbox"], max_mb=o["outbox_max_mb"], policy=o["outbox_policy"])
            self._counter_path: str | None = o["outbox"] + ".counter"
        else:
            log.warning("modbus sink %s: no outbox path configured; queued results are lost on restart", name)
            self._outbox = Outbox(":memory:", max_mb=o["outbox_max_mb"], policy=o["outbox_policy"])
            self._counter_path = None
        self._acked_counter = self._load_counter()
        # The presented result: (id, counter, noread, payload); None when nothing is presented.
        # Only the server thread changes it.
        self._current: tuple[int, int, bool, bytes] | None = None
        self._pending = True  # set by emit: the outbox may hold something not yet looked at
        self._status: tuple[float, dict] = (-1e9, {})
        self._coil_written = False
        self._limited = _Limited()
        self._handlers: set[_Handler] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._final_depth: int | None = None
        self.clients = 0
        self.delivered = 0
        self.refused = 0
        self.bad_requests = 0
        self.last_error: str | None = None

    # -- public API ----------------------------------------------------------------------------

    def start(self) -> None:
        """Listen on host:port. Raises OSError with one line naming the port (or host) when it
        cannot be bound, e.g. "port 5020: address already in use"."""
        if self._thread is not None:
            return
        host, port = self.opts["host"], self.opts["port"]
        self._check_bind(host, port)
        ready = threading.Event()
        failed: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(ready, failed), name=f"modbus-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(10.0) or failed:
            self.close(0)
            raise OSError(f"port {port}: {failed[0] if failed else 'server did not start'}")
        log.info("modbus sink %s: serving on %s:%d (unit id %d)", self.name, host, port, self.opts["unit_id"])

    def emit(self, result: dict) -> None:
        """Store the result in the outbox; the server presents it when the PLC gets to it."""
        before = self._outbox.dropped
        self._outbox.put(int(result["id"]), encode_result(result))
        if self._outbox.dropped != before and (before == 0 or self._outbox.dropped % 1000 == 0):
            log.warning("modbus sink %s: outbox full (%s MB, %s): %d result(s) dropped so far",
                        self.name, self.opts["outbox_max_mb"], self.opts["outbox_policy"], self._outbox.dropped)
        self._pending = True  # no wake-up needed: the next PLC poll looks at the outbox

    def state(self) -> dict:
        cur = self._current
        return {
            "connected": self.clients > 0,
            "clients": self.clients,
            "queued": self._queued(),
            "delivered": self.delivered,
            "presented_id": cur[0] if cur else None,
            "counter": cur[1] if cur else self._acked_counter,
            "dropped": self._outbox.dropped,
            "refused": self.refused,
            "bad_requests": self.bad_requests,
            "last_error": self.last_error,
        }

    def _queued(self) -> int:
        # The service asks for state() after close() too (its "stopped" line).
        return self._final_depth if self._final_depth is not None else self._outbox.depth()

    def close(self, timeout: float = 5.0) -> None:
        """Leave a connected PLC up to `timeout` s to take what is queued (as long as it keeps
        acknowledging: a stalled one does not hold the shutdown), then stop the server; the rest
        stays in the outbox for the next start."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        progress, last = time.monotonic(), self.delivered
        while self.clients and self._outbox.depth() and time.monotonic() < deadline:
            if self.delivered != last:
                progress, last = time.monotonic(), self.delivered
            elif time.monotonic() - progress > _CLOSE_STALL_S:
                break
            time.sleep(0.02)
        if self._thread is not None and self._loop is not None:
            if self._stopping is not None:
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(max(1.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("modbus sink %s: server thread did not stop within %.1f s", self.name, timeout)
                return  # it still uses the outbox; leave both to it (daemon thread)
            self._thread = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        self._closed = True
        self._final_depth = self._outbox.depth()
        self._outbox.close()

    # -- server thread -------------------------------------------------------------------------

    def _check_bind(self, host: str, port: int) -> None:
        """Bind once here so the user gets the reason (pymodbus only says it could not listen)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise OSError(f"host {host!r}: {e.strerror}") from None
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as pymodbus will
            try:
                s.bind(addr)
            except OSError as e:
                if e.errno == errno.EADDRNOTAVAIL:
                    raise OSError(f"host {host!r}: {os.strerror(e.errno).lower()}") from None
                hint = " (ports below 1024 need root; use e.g. 5020)" if e.errno == errno.EACCES else ""
                raise OSError(f"port {port}: {os.strerror(e.errno or 0).lower()}{hint}") from None

    def _run(self, ready: threading.Event, failed: list[str]) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve(ready, failed))
        except Exception as e:  # the thread must say why it ended, not die silently
            log.exception("modbus sink %s: server stopped", self.name)
            self.last_error = f"server stopped: {e}"
            failed.append(str(e))
            ready.set()
        finally:
            # cancel what pymodbus left (request tasks of clients cut off) so nothing outlives close()
            pending = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))

    async def _serve(self, ready: threading.Event, failed: list[str]) -> None:
        self._stopping = asyncio.Event()
        server = _Server(self, (self.opts["host"], self.opts["port"]))
        if not await server.listen():
            failed.append("cannot listen (address in use or not available)")
            ready.set()
            return
        ready.set()
        try:
            while not self._stopping.is_set():
                try:
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
                except asyncio.TimeoutError:
                    self._check_clients()
        finally:
            await server.shutdown()

    def _check_clients(self) -> None:
        """Cut off connections that went silent or stopped reading: each holds one of the
        max_clients slots, and a PLC reconnecting after a crash must find one free."""
        now = time.monotonic()
        for h in list(self._handlers):
            transport = h.transport
            if transport is None:
                continue
            if now - h.last_rx > self.opts["idle_timeout_s"]:
                log.info("modbus sink %s: closing %s, silent for %.0f s", self.name, h.peer, now - h.last_rx)
            elif transport.get_write_buffer_size() > _MAX_WRITE_BUFFER:
                log.warning("modbus sink %s: closing %s, it does not read its answers", self.name, h.peer)
            else:
                continue
            transport.abort()

    def _connected(self, h: _Handler) -> None:
        if len(self._handlers) >= self.opts["max_clients"]:
            self.refused += 1
            self._limited.warn("refused", "modbus sink %s: connection from %s refused: max_clients (%d) reached",
                               self.name, h.peer, self.opts["max_clients"])
            h.close()
            return
        self._handlers.add(h)
        self.clients = len(self._handlers)
        log.info("modbus sink %s: client %s connected", self.name, h.peer)

    def _disconnected(self, h: _Handler) -> None:
        if h in self._handlers:
            self._handlers.discard(h)
            self.clients = len(self._handlers)
            log.info("modbus sink %s: client %s disconnected", self.name, h.peer)

    def _bad_request(self, peer: str, fc: int, code: int) -> None:
        self.bad_requests += 1
        if code == ExcCodes.GATEWAY_NO_RESPONSE:
            return  # _unit_ok logged it, with the unit ids
        try:
            what = ExcCodes(code).name.lower().replace("_", " ")
        except ValueError:
            what = f"code {code}"
        self.last_error = f"{peer}: function {fc} answered with exception {code} ({what})"
        self._limited.warn(f"{fc}/{code}", "modbus sink %s: %s", self.name, self.last_error)

    # -- the datastore pymodbus calls (server thread) ------------------------------------------

    def device_ids(self) -> list[int]:
        return [self.opts["unit_id"]]

    async def async_getValues(self, device_id: int, func_code: int, address: int, count: int = 1) -> list | ExcCodes:
        if not self._unit_ok(device_id):
            return ExcCodes.GATEWAY_NO_RESPONSE
        if func_code in _COIL_FCS:
            if address != 0 or count != 1:
                return ExcCodes.ILLEGAL_ADDRESS
            if func_code != 1:  # the echo of a write is what was written (the window opens later)
                return [self._coil_written]
            return [bool(self._status_word() & BIT_WINDOW)]
        if func_code not in _READ_FCS + _WRITE_FCS:
            return ExcCodes.ILLEGAL_FUNCTION
        if address < 0 or count < 1 or address + count > REG_PAYLOAD + self.opts["payload_registers"]:
            return ExcCodes.ILLEGAL_ADDRESS
        return self._registers(address, count)

    async def async_setValues(self, device_id: int, func_code: int, address: int, values: list) -> ExcCodes | None:
        if not self._unit_ok(device_id):
            return ExcCodes.GATEWAY_NO_RESPONSE
        if func_code in _COIL_FCS:
            if address != 0 or len(values) != 1:
                return ExcCodes.ILLEGAL_ADDRESS
            self._coil_written = bool(values[0])
            self._trigger("on" if values[0] else "off")
            return None
        if func_code not in _WRITE_FCS:
            return ExcCodes.ILLEGAL_FUNCTION
        if address != REG_ACK or len(values) != 1:
            return ExcCodes.ILLEGAL_ADDRESS  # everything but the ACK register is read-only
        self._ack(int(values[0]))
        return None

    def _unit_ok(self, device_id: int) -> bool:
        unit = self.opts["unit_id"]
        if unit == 0 or device_id == unit:
            return True
        self._limited.warn("unit", "modbus sink %s: request for unit id %d ignored (unit_id is %d)",
                           self.name, device_id, unit)
        return False

    def _ack(self, value: int) -> None:
        cur = self._present()
        if cur is None or value != cur[1]:
            self._limited.warn("ack", "modbus sink %s: ACK %d ignored: the presented counter is %s",
                               self.name, value, cur[1] if cur else "none (nothing presented)")
            return
        self._outbox.ack(cur[0])
        self.delivered += 1
        self._acked_counter = cur[1]
        self._save_counter()
        self._current = None
        self._pending = True
        self._present()  # the next result is in the registers before the write is answered

    def _present(self) -> tuple[int, int, bool, bytes] | None:
        """The presented result, taking the oldest queued one when nothing is presented."""
        if self._current is None and self._pending:
            self._pending = False  # cleared before peeking: an emit racing this sets it again
            rows = self._outbox.peek(limit=1)
            if rows:
                rid, blob = rows[0]
                counter = self._acked_counter % 0xFFFF + 1  # 1..65535: 0 means "none yet"
                self._current = (rid, counter, blob[:1] == b"N", blob[1:])
        return self._current

    def _status_word(self) -> int:
        cur = self._present()
        word = 0
        status = self._service_status()
        if status.get("service", "running") == "running":
            word |= BIT_ONLINE
        if status.get("trigger", {}).get("open", True):
            word |= BIT_WINDOW
        if cur is not None:
            word |= BIT_PRESENT
            if cur[2]:
                word |= BIT_NOREAD
            if len(cur[3]) > 2 * self.opts["payload_registers"]:
                word |= BIT_TRUNCATED
        return word

    def _service_status(self) -> dict:
        if self._status_provider is None:
            return {}
        at, status = self._status
        if time.monotonic() - at > _STATUS_TTL_S:
            try:
                status = self._status_provider() or {}
            except Exception as e:  # status is best effort; the registers must still answer
                self._limited.warn("status", "modbus sink %s: status unavailable: %s", self.name, e)
                status = {}
            self._status = (time.monotonic(), status)
        return status

    def _registers(self, address: int, count: int) -> list[int]:
        """Registers address..address+count-1 of the map, built from the presented result."""
        cur = self._present()
        n = self.opts["payload_registers"]
        regs = [0] * (REG_PAYLOAD + n)
        end = address + count
        if address <= REG_STATUS < end:
            regs[REG_STATUS] = self._status_word()
        if address <= REG_QUEUED < end:
            regs[REG_QUEUED] = min(self._outbox.depth(), 0xFFFF)
        regs[REG_QUALITY] = QUALITY_NONE
        regs[REG_ACK] = self._acked_counter
        if cur is not None:
            rid, counter, _, payload = cur
            regs[REG_COUNTER] = counter
            regs[REG_ID:REG_ID + 4] = struct.unpack(">4H", struct.pack(">Q", rid & 0xFFFF_FFFF_FFFF_FFFF))
            if end > REG_PAYLOAD:
                regs[REG_PAYLOAD:], regs[REG_LENGTH], _ = payload_registers(payload, n)
            else:
                regs[REG_LENGTH] = min(len(payload), 2 * n)
        return regs[address:end]

    def _trigger(self, what: str) -> None:
        if self._trigger_handler is None:
            log.debug("modbus sink %s: trigger %s received but no trigger handler", self.name, what)
            return
        try:
            self._trigger_handler(what)
        except Exception:  # a bad handler must not stop the server
            log.exception("modbus sink %s: trigger handler failed on %r", self.name, what)
        self._status = (-1e9, {})  # the window bit must show the change at the next read

    # -- the counter survives restarts -----------------------------------------------------------

    def _load_counter(self) -> int:
        """The last acknowledged counter, so a result presented again after a restart carries
        the counter it had (a PLC comparing counters sees it as the one it did not ack)."""
        if self._counter_path is None:
            return 0
        try:
            with open(self._counter_path, encoding="ascii") as f:
                value = int(f.read().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as e:
            log.warning("modbus sink %s: %s unreadable (%s); counting from 1", self.name, self._counter_path, e)
            return 0
        return value if 0 <= value <= 0xFFFF else 0

    def _save_counter(self) -> None:
        # Not fsynced (that would double the disk flushes per result): after a power cut the
        # counter may restart a little behind; the PLC's "result present" bit still holds.
        if self._counter_path is None:
            return
        tmp = self._counter_path + ".tmp"
        try:
            with open(tmp, "w", encoding="ascii") as f:
                f.write(str(self._acked_counter))
            os.replace(tmp, self._counter_path)
        except OSError as e:
            self._limited.warn("counter", "modbus sink %s: cannot write %s: %s", self.name, self._counter_path, e)
