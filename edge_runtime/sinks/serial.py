"""Serial sink: sends every result to a PLC over RS-232/RS-485 (USB adapter or UART).

Wire format (bytes rules in edge_runtime.sinks.serial_frame)::

    prefix + payload[,payload...] + suffix [+ BCC]

Defaults: prefix STX (0x02), suffix ETX (0x03), no BCC, 9600 8N1. Many PLC "ASCII receive"
blocks want a line instead: set ``suffix = "\\r\\n"`` (or ``"\\r"``) and ``prefix = ""``.
In TOML control characters are written ``"\\u0002"``, ``"\\u0003"``, ``"\\r\\n"``.

``checksum = "xor"`` appends the block check character after the suffix: the XOR of every
byte after the prefix up to and including the suffix.

Options (``DEFAULTS``; every key in ``KEYS``):

- port: device path, required (e.g. /dev/ttyUSB0; /dev/serial/by-id/... survives re-plugging).
- baudrate 9600, bytesize 8 (5-8), parity "N"|"E"|"O"|"M"|"S", stopbits 1|1.5|2, rtscts false.
- prefix "\\x02", suffix "\\x03", checksum "none"|"xor", separator "," (between codes sent in one
  frame by emit_many), noread "NOREAD" (sent for a no-read event).
- mismatch "": when set (e.g. "NG"), a read that failed the match-code check ([match],
  ``"match": false``) is sent as this string in place of its payload (the `{text}` field of a
  template). Empty: the payload is sent as for any read.
- template "": empty = the payload alone (the framing above). Else what each result
  contributes to the frame, "standard formatting" style: ``"{text};{quality.grade};{id}"``,
  `{name}` placeholders from serial_frame.TEMPLATE_FIELDS (text, id, grade, score, match, x,
  y, decoder, stage, ts, device_id; quality.grade, quality.score), the rest literal; ``{{`` and
  ``}}`` are literal braces. Parsed by serial_frame.parse_template, never str.format. An
  absent value (grade of a noread, match with [match] off) is empty; match is 1 or 0; x, y the
  code's centre in whole pixels. The rendered text goes through the control policy like a
  payload, so no field can break framing; literal text must not hold a prefix, suffix or
  separator byte.
- control "escape"|"replace"|"strip" with replacement "?": what happens to payload bytes that
  would break framing (see serial_frame). encoding "utf-8" for text; codes whose raw bytes are
  not UTF-8 are sent as their raw bytes.
- ack false: when true, the PLC must answer each frame with ACK (0x06) within ack_timeout_ms
  (500); NAK (0x15) or silence -> resend, up to `retries` (3) more times; after that the frame
  stays queued (head of line, order is kept) and is tried again after reopen_interval_s. A
  frame is never dropped for lack of an ACK. Delivery is at-least-once: an ACK lost on the line
  makes the PLC see the frame again.
  ACK/NAK bytes that arrive while no frame awaits an answer (or at all with ack = false) are
  stray: counted in state()["stray_bytes"], dropped, and logged at most once a minute.
- trigger_on "LON", trigger_off "LOFF": commands the PLC sends on the same port (terminated by
  CR, LF or CRLF, or wrapped in STX/ETX); they call trigger_handler("on"|"off") in order,
  from the sink's I/O thread (the handler must return quickly: deliveries wait for it).
- outbox: path of the durable outbox (sqlite). A frame is stored there inside emit(), before
  anything else, and leaves it only once written and flushed (ack=false) or ACKed (ack=true).
  Without a path the queue lives in memory (a warning says so). outbox_max_mb 16;
  outbox_policy "drop_oldest"|"drop_newest" when it is full (counted in `dropped`).
- reopen_interval_s 1.0: a missing or vanished port (USB adapter unplugged) is retried this often.

Counters in state() count frames (one frame may carry several codes).

A write cut short by an unplug is sent again, whole, after the port returns: the PLC may see a
torn fragment first, which its STX/ETX (or line) framing discards.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import termios
import threading
import time
from typing import Callable

import serial

from edge_runtime.outbox import POLICIES, Outbox
from edge_runtime.sinks.serial_frame import (
    CHECKSUMS,
    CommandParser,
    build_frame,
    check_framing,
    parse_template,
    result_payload,
    to_bytes,
)

log = logging.getLogger(__name__)

DEFAULTS: dict = {
    "port": None,
    "baudrate": 9600,
    "bytesize": 8,
    "parity": "N",
    "stopbits": 1,
    "rtscts": False,
    "prefix": "\x02",
    "suffix": "\x03",
    "checksum": "none",
    "noread": "NOREAD",
    "mismatch": "",
    "template": "",
    "separator": ",",
    "control": "escape",
    "replacement": "?",
    "encoding": "utf-8",
    "ack": False,
    "ack_timeout_ms": 500,
    "retries": 3,
    "trigger_on": "LON",
    "trigger_off": "LOFF",
    "outbox": None,
    "outbox_max_mb": 16,
    "outbox_policy": "drop_oldest",
    "reopen_interval_s": 1.0,
}
KEYS = frozenset(DEFAULTS)

_PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
             "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
_STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}
_BATCH = 64  # frames read from the outbox at a time
# ACK/NAK bytes kept for the frame awaiting an answer. One is the answer; a few more cover a PLC
# that answers twice. Any other ACK/NAK is stray (nothing awaits it): counted and dropped, so
# line noise or a PLC stuck sending NAK cannot grow memory (issue 15: 28 MB of NAK took the
# process from 103 to 344 MB when every byte was kept).
_MAX_ANSWERS = 4
_STRAY_LOG_INTERVAL_S = 60.0  # one warning per burst of stray bytes, at most once a minute
_READ_MAX = 65536  # bytes taken from the port per read: bounds the parser's event list
# What a vanished device raises: pyserial wraps most errno failures, but flush() lets
# termios.error (not an OSError) through when tcdrain hits EIO on an unplugged adapter.
PORT_ERRORS = (serial.SerialException, OSError, termios.error)


REQUIRED = ("port",)
# Inclusive (lo, hi) per numeric key (the config layer enforces them for the file too).
RANGES: dict[str, tuple[float, float]] = {
    "baudrate": (50, 4_000_000),
    "bytesize": (5, 8),
    "stopbits": (1, 2),
    "ack_timeout_ms": (1, 60_000),
    "retries": (0, 1000),
    "outbox_max_mb": (0.001, 1_000_000),
    "reopen_interval_s": (0.01, 3600),
}
# Framing strings hold control characters (STX, ETX, CR LF) by design.
TEXT: dict[str, str] = dict.fromkeys(("prefix", "suffix", "separator", "replacement", "noread", "mismatch"), "frame")


def describe(err: BaseException) -> str:
    """Short reason for a log line: pyserial repeats the path (which the line already names)
    inside its messages, e.g. "[Errno 2] could not open port X: [Errno 2] No such file..."."""
    code = getattr(err, "errno", None)
    if isinstance(err, serial.SerialTimeoutException):
        return "write timed out (flow control holding the line?)"
    if code in (errno.EAGAIN, errno.EWOULDBLOCK) and "lock" in str(err):
        return "in use by another process (locked)"
    if isinstance(code, int) and code > 0:
        return f"{os.strerror(code)} (errno {code})"
    if isinstance(err, termios.error) and err.args and isinstance(err.args[0], int):
        return f"{os.strerror(err.args[0])} (errno {err.args[0]})"
    return str(err) or type(err).__name__


def validate_options(name: str, device_id: str, options: dict) -> dict:
    """Merge `options` over DEFAULTS and check every value, framing included, without opening
    anything (the config layer calls this at check-config time). Raises ValueError with one
    line naming the sink and the key."""
    where = f"serial sink {name!r}"
    unknown = set(options) - KEYS
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; "
                         f"known: {', '.join(sorted(KEYS))}")
    o = {**DEFAULTS, **options}

    def bad(key: str, want: str) -> ValueError:
        return ValueError(f"{where} option {key!r} must be {want}, got {o[key]!r}")

    if not o["port"] or not isinstance(o["port"], str):
        raise bad("port", "a device path such as /dev/ttyUSB0")
    if isinstance(o["baudrate"], bool) or not isinstance(o["baudrate"], int) or o["baudrate"] <= 0:
        raise bad("baudrate", "a positive integer")
    if o["bytesize"] not in (5, 6, 7, 8):
        raise bad("bytesize", "5, 6, 7 or 8")
    if o["parity"] not in _PARITIES:
        raise bad("parity", "one of N, E, O, M, S")
    if isinstance(o["stopbits"], bool) or o["stopbits"] not in _STOPBITS:
        raise bad("stopbits", "1, 1.5 or 2")
    for k in ("rtscts", "ack"):
        if not isinstance(o[k], bool):
            raise bad(k, "true or false")
    if o["checksum"] not in CHECKSUMS:
        raise bad("checksum", "one of " + ", ".join(CHECKSUMS))
    try:
        "".encode(o["encoding"])
    except (LookupError, TypeError):
        raise bad("encoding", "a Python codec name such as utf-8") from None
    for k, (lo, hi) in RANGES.items():
        if isinstance(o[k], bool) or not isinstance(o[k], (int, float)) or not lo <= o[k] <= hi:
            raise bad(k, f"a number in {lo:g}..{hi:g}")
    if not isinstance(o["retries"], int):
        raise bad("retries", "an integer")
    for k in ("trigger_on", "trigger_off", "noread", "mismatch", "template", "prefix", "suffix", "separator",
              "replacement"):
        if not isinstance(o[k], (str, bytes)):
            raise bad(k, "a string")
    if o["outbox"] is not None and not isinstance(o["outbox"], str):
        raise bad("outbox", "a file path")
    if o["outbox_policy"] not in POLICIES:
        raise bad("outbox_policy", "one of " + ", ".join(POLICIES))
    try:
        framing = [to_bytes(o[k], k) for k in ("prefix", "suffix", "separator", "replacement", "noread")]
        check_framing(*framing[:3], o["control"], framing[3])
    except ValueError as e:
        # A framing message may name several keys; lead with the one changed from its
        # default (the one to fix), so the config error names that key.
        changed = [k for k in ("prefix", "suffix", "separator", "replacement", "noread", "control")
                   if o[k] != DEFAULTS[k] and k in str(e)]
        raise ValueError(f"{where}: {changed[0] + ': ' if changed else ''}{e}") from None
    try:
        to_bytes(o["mismatch"], "mismatch")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if o["template"]:
        try:
            tokens = parse_template(o["template"])
        except ValueError as e:
            raise ValueError(f"{where}: template: {e}") from None
        framing = set(b"".join(framing[:3]))
        for tok in tokens:
            if isinstance(tok, str) and set(tok.encode(o["encoding"], errors="replace")) & framing:
                raise ValueError(f"{where}: template: literal text {tok!r} holds a prefix, suffix or separator "
                                 "byte: the PLC could not find the fields (change the text or the separator)")
    return o


class SerialSink:
    """Durable, ordered delivery of results to a PLC over one serial port.

    One I/O thread owns the port: it writes queued frames in id order, reads ACK/NAK and
    trigger commands, and reopens the port when it vanishes. emit() only stores the frame in
    the outbox and wakes that thread, so the capture loop never waits for the line.
    """

    kind = "serial"

    def __init__(self, name: str, device_id: str, options: dict, *,
                 trigger_handler: Callable[[str], None] | None = None,
                 status_provider: Callable[[], dict] | None = None) -> None:
        self.name = name
        self.device_id = device_id
        self._trigger_handler = trigger_handler
        # Accepted for the common sink signature; the serial protocol has no status query yet.
        self._status_provider = status_provider
        self.opts = o = validate_options(name, device_id, options)
        self._prefix, self._suffix, self._separator, self._replacement, self._noread = (
            to_bytes(o[k], k) for k in ("prefix", "suffix", "separator", "replacement", "noread"))
        self._mismatch = to_bytes(o["mismatch"], "mismatch")
        self._template = parse_template(o["template"]) if o["template"] else None
        self._port_path: str = o["port"]
        self._ack_timeout = o["ack_timeout_ms"] / 1000.0
        if o["outbox"]:
            self._outbox = Outbox(o["outbox"], max_mb=o["outbox_max_mb"], policy=o["outbox_policy"])
        else:
            log.warning("serial sink %s: no outbox path configured; queued frames are lost on restart", name)
            self._outbox = Outbox(":memory:", max_mb=o["outbox_max_mb"], policy=o["outbox_policy"])
        self._parser = CommandParser()
        self._port: serial.Serial | None = None
        self._port_lock = threading.Lock()  # guards self._port against close() racing the thread
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._down_logged = False  # "port not available" is logged once per outage
        self._stuck_logged: int | None = None  # frame id whose ACK failure was logged
        self._acks: list[str] = []  # answers to the frame awaiting one (<= _MAX_ANSWERS)
        self._awaiting = False  # a frame was written in ACK mode and its answer is due
        self._stray_logged_at: float | None = None
        self.stray_bytes = 0  # ACK/NAK bytes that arrived with no frame awaiting them
        self.delivered = 0
        self.naks = 0
        self.timeouts = 0
        self.last_error: str | None = None

    # -- public API ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the I/O thread. Never raises for a missing port: it is retried in the thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"serial-{self.name}", daemon=True)
        self._thread.start()

    def encode(self, results: list[dict]) -> bytes:
        """The exact frame bytes for `results` (also what the outbox stores, so a resend is identical)."""
        enc = self.opts["encoding"]
        payloads = [result_payload(r, self._noread, enc, mismatch=self._mismatch, template=self._template)
                    for r in results]
        return build_frame(payloads, prefix=self._prefix, suffix=self._suffix, separator=self._separator,
                           control=self.opts["control"], replacement=self._replacement,
                           checksum=self.opts["checksum"])

    def emit(self, result: dict) -> None:
        self.emit_many([result])

    def emit_many(self, results: list[dict]) -> None:
        """Queue one frame carrying all `results` (joined by the separator).

        The frame is in the durable outbox, keyed by the first result's id, when this returns.
        """
        if not results:
            return
        before = self._outbox.dropped
        self._outbox.put(int(results[0]["id"]), self.encode(results))
        if self._outbox.dropped != before and (before == 0 or self._outbox.dropped % 1000 == 0):
            log.warning("serial sink %s: outbox full (%s MB, %s): %d frame(s) dropped so far",
                        self.name, self.opts["outbox_max_mb"], self.opts["outbox_policy"], self._outbox.dropped)
        self._wake()

    def state(self) -> dict:
        return {
            "connected": self._port is not None,
            "queued": self._outbox.depth(),
            "delivered": self.delivered,
            "dropped": self._outbox.dropped,
            "naks": self.naks,
            "timeouts": self.timeouts,
            "stray_bytes": self.stray_bytes,
            "last_error": self.last_error,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Give queued frames up to `timeout` s to go out, then stop; the rest stay in the outbox."""
        if self._closed:
            return
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            while self._port is not None and self._outbox.depth() and time.monotonic() < deadline:
                time.sleep(0.02)
            self._stop.set()
            self._wake()
            with self._port_lock:
                if self._port is not None:
                    try:
                        self._port.cancel_write()  # unblock a write stuck on flow control
                    except PORT_ERRORS:
                        pass
            self._thread.join(max(0.5, deadline - time.monotonic()))
            if self._thread.is_alive():
                log.warning("serial sink %s: I/O thread did not stop within %.1f s", self.name, timeout)
                return  # it still uses the port and the outbox; leave them to it (daemon thread)
            self._thread = None
        self._closed = True
        self._close_port()
        self._outbox.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -- I/O thread ----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._closed:
            return
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass  # pipe full (thread is already due to wake) or closed (sink closing)

    def _run(self) -> None:
        interval = self.opts["reopen_interval_s"]
        while not self._stop.is_set():
            if self._port is None and not self._open():
                self._stop.wait(interval)
                continue
            try:
                self._pump()
            except PORT_ERRORS as e:
                self._lost(e)
            except Exception as e:  # the thread must outlive any surprise: log it, reset, go on
                log.exception("serial sink %s: unexpected error; resetting the port", self.name)
                self._lost(e)

    def _open(self) -> bool:
        o = self.opts
        try:
            port = serial.Serial(
                self._port_path, baudrate=o["baudrate"], bytesize=o["bytesize"],
                parity=_PARITIES[o["parity"]], stopbits=_STOPBITS[o["stopbits"]], rtscts=o["rtscts"],
                timeout=0, write_timeout=self._write_timeout(), exclusive=True)
        except (serial.SerialException, OSError, ValueError) as e:
            self.last_error = f"open {self._port_path}: {describe(e)}"
            if not self._down_logged:
                log.warning("serial port %s not available: %s; retrying every %.1f s",
                            self._port_path, describe(e), o["reopen_interval_s"])
                self._down_logged = True
            return False
        with self._port_lock:
            self._port = port
        self._parser = CommandParser()
        self._acks.clear()
        if self._down_logged:
            log.info("serial port %s open again", self._port_path)
        else:
            log.info("serial port %s open (%d %d%s%s)", self._port_path, o["baudrate"], o["bytesize"],
                     o["parity"], o["stopbits"])
        self._down_logged = False
        return True

    def _write_timeout(self) -> float:
        # Long enough for a large escaped frame at a slow baud rate (~11 bits per byte on the
        # line), short enough that flow control stuck off is noticed and the port reset.
        return 2.0 + 16384 * 11 / self.opts["baudrate"]

    def _lost(self, err: Exception) -> None:
        self.last_error = f"{self._port_path}: {describe(err)}"
        if not self._down_logged:
            log.warning("serial port %s lost: %s; reopening every %.1f s",
                        self._port_path, describe(err), self.opts["reopen_interval_s"])
            self._down_logged = True
        self._close_port()
        self._stop.wait(self.opts["reopen_interval_s"])

    def _close_port(self) -> None:
        with self._port_lock:
            port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except PORT_ERRORS:
                pass

    def _poll(self, timeout: float) -> None:
        """Wait up to `timeout` for input or a wake-up, then handle what the PLC sent."""
        port = self._port
        assert port is not None
        ready, _, _ = select.select([port.fileno(), self._wake_r], [], [], max(0.0, timeout))
        if self._wake_r in ready:
            try:
                os.read(self._wake_r, 4096)
            except BlockingIOError:
                pass
        if port.fileno() in ready:
            # select said readable: a vanished device reads as b"" -> SerialException from pyserial
            data = port.read(min(max(1, port.in_waiting), _READ_MAX))
            self._handle_input(data)

    def _handle_input(self, data: bytes) -> None:
        for ev in self._parser.feed(data):
            if ev[0] in ("ack", "nak"):
                if self._awaiting and len(self._acks) < _MAX_ANSWERS:
                    self._acks.append(ev[0])
                else:
                    self._stray()
            elif ev[1] == self.opts["trigger_on"]:
                self._trigger("on")
            elif ev[1] == self.opts["trigger_off"]:
                self._trigger("off")
            else:
                log.debug("serial sink %s: ignoring unknown command %r", self.name, ev[1])

    def _stray(self) -> None:
        self.stray_bytes += 1
        now = time.monotonic()
        if self._stray_logged_at is None or now - self._stray_logged_at >= _STRAY_LOG_INTERVAL_S:
            self._stray_logged_at = now
            why = "no frame is awaiting an answer" if self.opts["ack"] else "ack = false"
            log.warning("serial sink %s: ACK/NAK from %s while %s: dropped (counted in stray_bytes, "
                        "%d so far; logged at most once a minute)", self.name, self._port_path, why,
                        self.stray_bytes)

    def _trigger(self, what: str) -> None:
        if self._trigger_handler is None:
            log.debug("serial sink %s: trigger %s received but no trigger handler", self.name, what)
            return
        try:
            self._trigger_handler(what)
        except Exception:  # a bad handler must not stop deliveries
            log.exception("serial sink %s: trigger handler failed on %r", self.name, what)

    def _pump(self) -> None:
        """Send what is queued, then wait for input or new frames."""
        frames = self._outbox.peek(limit=_BATCH)
        if not frames:
            self._poll(1.0)
            return
        for rid, frame in frames:
            if self._stop.is_set():
                return
            if self.opts["ack"]:
                if not self._send_acked(rid, frame):
                    # Keep order: nothing behind this frame goes out before it is ACKed.
                    self._idle(self.opts["reopen_interval_s"])
                    return
            else:
                self._write(frame)
                self._outbox.ack(rid)
                self.delivered += 1
            self._poll(0)  # keep commands flowing during a long backlog

    def _write(self, frame: bytes) -> None:
        port = self._port
        assert port is not None
        port.write(frame)
        port.flush()

    def _send_acked(self, rid: int, frame: bytes) -> bool:
        """Send `frame` until ACKed, at most 1 + retries times. True if the PLC ACKed it."""
        tries = 1 + self.opts["retries"]
        # An ACK/NAK left over from an earlier frame must not acknowledge this one.
        self._poll(0)
        self._acks.clear()
        for _ in range(tries):
            self._write(frame)
            self._awaiting = True
            try:
                answer = self._wait_answer(time.monotonic() + self._ack_timeout)
            finally:
                self._awaiting = False
            if answer == "ack":
                self._outbox.ack(rid)
                self.delivered += 1
                if self._stuck_logged == rid:
                    log.info("serial sink %s: PLC acknowledged frame %d, queue moving again", self.name, rid)
                self._stuck_logged = None
                return True
            if answer == "nak":
                self.naks += 1
                self.last_error = f"{self._port_path}: NAK for frame {rid}"
            else:
                self.timeouts += 1
                self.last_error = f"{self._port_path}: no ACK for frame {rid} within {self.opts['ack_timeout_ms']} ms"
            if self._stop.is_set():
                return False
        if self._stuck_logged != rid:
            log.warning("serial sink %s: PLC did not acknowledge frame %d after %d tries; "
                        "keeping it queued, retrying every %.1f s",
                        self.name, rid, tries, self.opts["reopen_interval_s"])
            self._stuck_logged = rid
        return False

    def _idle(self, seconds: float) -> None:
        """Wait without sending, still serving trigger commands."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._poll(left)

    def _wait_answer(self, deadline: float) -> str | None:
        while True:
            if self._acks:
                return self._acks.pop(0)
            left = deadline - time.monotonic()
            if left <= 0 or self._stop.is_set():
                return None
            self._poll(left)
