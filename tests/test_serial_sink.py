"""SerialSink against real pseudo-terminals: socat plays the USB adapter, the test plays the PLC."""

from __future__ import annotations

import base64
import itertools
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
from functools import reduce
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge_runtime.sinks.serial import DEFAULTS, KEYS, SerialSink
from edge_runtime.sinks.serial_frame import unescape
from pty_pair import OsPty, SocatPair, read_until

ROOT = Path(__file__).resolve().parents[1]
LOGGER = "edge_runtime.sinks.serial"


def result(rid: int, text: str | None = None, raw: bytes | None = None, kind: str = "read") -> dict:
    r = {"id": rid, "device_id": "cam0", "ts": "2026-11-25T14:39:07.123Z", "kind": kind,
         "text": text, "format": "QRCode", "corners": [[0, 0], [1, 0], [1, 1], [0, 1]]}
    if raw is not None:
        try:
            r["text"] = raw.decode("utf-8")
        except UnicodeDecodeError:
            r["text"] = raw.decode("latin-1")
            r["bytes_b64"] = base64.b64encode(raw).decode()
    return r


def wait_for(pred: Callable[[], bool], timeout: float = 20.0, what: str = "condition",
             detail: Callable[[], object] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} {detail()}")
        time.sleep(0.02)


class Plc(threading.Thread):
    """The PLC end: splits the byte stream into frames at `suffix`, answers each frame with
    answer(index, frame) (ACK/NAK bytes or None), and reopens its port when the pair restarts."""

    def __init__(self, pair: SocatPair, suffix: bytes = b"\x03",
                 answer: Callable[[int, bytes], bytes | None] = lambda i, f: None) -> None:
        super().__init__(daemon=True)
        self.pair, self.suffix, self.answer = pair, suffix, answer
        self.frames: list[bytes] = []
        self.opens = 0
        self._halt = threading.Event()
        self._fd: int | None = None

    def send(self, data: bytes) -> None:
        wait_for(lambda: self._fd is not None, what="PLC port open")
        os.write(self._fd, data)

    def run(self) -> None:
        buf = b""
        while not self._halt.is_set():
            if self._fd is None:
                try:
                    self._fd = self.pair.open_plc()
                    self.opens += 1
                    buf = b""
                except OSError:
                    time.sleep(0.02)
                    continue
            r, _, _ = select.select([self._fd], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self._fd, 4096)
            except OSError:
                data = b""
            if not data:  # socat gone: the port vanished under us too
                os.close(self._fd)
                self._fd = None
                continue
            buf += data
            while (i := buf.find(self.suffix)) >= 0:
                frame, buf = buf[:i + len(self.suffix)], buf[i + len(self.suffix):]
                self.frames.append(frame)
                reply = self.answer(len(self.frames) - 1, frame)
                if reply:
                    try:
                        os.write(self._fd, reply)
                    except OSError:
                        pass

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        if self._fd is not None:
            os.close(self._fd)


@pytest.fixture
def pair(tmp_path):
    p = SocatPair(tmp_path / "tty").start()
    yield p
    p.stop()


@pytest.fixture
def make_sink(tmp_path):
    sinks: list[SerialSink] = []

    def make(port: str, trigger_handler=None, **opts) -> SerialSink:
        opts.setdefault("outbox", str(tmp_path / f"outbox{len(sinks)}.db"))
        opts.setdefault("reopen_interval_s", 0.1)
        s = SerialSink(f"plc{len(sinks)}", "cam0", {"port": port, **opts}, trigger_handler=trigger_handler)
        sinks.append(s)
        s.start()
        return s

    yield make
    for s in sinks:
        s.close(timeout=1.0)


@pytest.fixture
def plcs():
    started: list[Plc] = []

    def make(pair: SocatPair, **kw) -> Plc:
        p = Plc(pair, **kw)
        started.append(p)
        p.start()
        return p

    yield make
    for p in started:
        p.stop()


def ids_of(frames: list[bytes]) -> list[int]:
    return [int(f.strip(b"\x02\x03").split(b"-")[1]) for f in frames]


# -- 1. byte-exact frames ---------------------------------------------------------------------

def test_default_frames_byte_exact(pair, make_sink) -> None:
    fd = pair.open_plc()
    sink = make_sink(pair.dev)
    sink.emit(result(1, "ABC-123"))
    sink.emit(result(2, kind="noread"))
    sink.emit_many([result(3, "A1"), result(4, "B2"), result(5, "C3")])
    want = b"\x02ABC-123\x03" b"\x02NOREAD\x03" b"\x02A1,B2,C3\x03"
    got = read_until(fd, lambda d: len(d) >= len(want))
    os.close(fd)
    assert got == want
    wait_for(lambda: sink.state()["delivered"] == 3, what="3 delivered")
    st_ = sink.state()
    assert st_["queued"] == 0 and st_["connected"] is True and st_["dropped"] == 0


def test_crlf_suffix_with_xor_bcc_on_plain_openpty(make_sink) -> None:
    with OsPty() as pty:
        sink = make_sink(pty.name, prefix="", suffix="\r\n", checksum="xor", separator=";", noread="NR")
        sink.emit(result(1, "ABC"))
        sink.emit_many([result(2, "X"), result(3, kind="noread")])
        # BCC computed here from the documented rule: XOR of body + suffix, after the suffix.
        bcc1 = reduce(lambda a, b: a ^ b, b"ABC\r\n", 0)
        bcc2 = reduce(lambda a, b: a ^ b, b"X;NR\r\n", 0)
        want = b"ABC\r\n" + bytes([bcc1]) + b"X;NR\r\n" + bytes([bcc2])
        assert read_until(pty.master, lambda d: len(d) >= len(want)) == want


def test_cr_suffix_with_stx(pair, make_sink) -> None:
    fd = pair.open_plc()
    sink = make_sink(pair.dev, suffix="\r")
    sink.emit(result(7, "LOT 42"))
    assert read_until(fd, lambda d: d.endswith(b"\r")) == b"\x02LOT 42\r"
    os.close(fd)


# -- 2. hostile payloads cannot break framing --------------------------------------------------

HOSTILE = b"\x02AB\x03\r\n\x00,\x1b[2J\x1b[31mRED\x1b[0m\\x41\x7f\x06\x15"


def test_hostile_payloads_over_the_wire(pair, make_sink) -> None:
    fd = pair.open_plc()
    sink = make_sink(pair.dev)
    ids = itertools.count(1)

    def one_frame(raw: bytes) -> None:
        sink.emit(result(next(ids), raw=raw))
        frame = read_until(fd, lambda d: b"\x03" in d)
        assert frame.startswith(b"\x02") and frame.endswith(b"\x03")
        body = frame[1:-1]
        assert b"\x02" not in body and b"\x03" not in body and b"," not in body
        assert not any(b < 0x20 or b == 0x7F for b in body)
        assert unescape(body) == raw

    one_frame(HOSTILE)

    @settings(max_examples=60, deadline=None)
    @given(st.binary(max_size=48))
    def check(raw: bytes) -> None:
        one_frame(raw)

    check()
    os.close(fd)


def test_replace_policy_keeps_framing_for_hostile_payload(pair, make_sink) -> None:
    fd = pair.open_plc()
    sink = make_sink(pair.dev, control="replace")
    sink.emit(result(1, raw=b"A\x02B\x03C,D\x1b[0m"))
    assert read_until(fd, lambda d: b"\x03" in d) == b"\x02A?B?C?D?[0m\x03"
    os.close(fd)


# -- 3. ACK / NAK ------------------------------------------------------------------------------

def test_nak_then_ack_resends_identical_frame_and_delivers_once(pair, make_sink, plcs) -> None:
    plc = plcs(pair, answer=lambda i, f: b"\x15" if i == 0 else b"\x06")
    wait_for(lambda: plc.opens == 1, what="PLC open")
    sink = make_sink(pair.dev, ack=True, ack_timeout_ms=2000)
    sink.emit(result(1, "CODE-00001"))
    wait_for(lambda: sink.state()["delivered"] == 1, what="delivery")
    assert plc.frames == [b"\x02CODE-00001\x03"] * 2
    st_ = sink.state()
    assert (st_["naks"], st_["timeouts"], st_["queued"]) == (1, 0, 0)


def test_silent_plc_keeps_frame_queued_until_it_acks(pair, make_sink, plcs) -> None:
    acking = threading.Event()
    plc = plcs(pair, answer=lambda i, f: b"\x06" if acking.is_set() else None)
    wait_for(lambda: plc.opens == 1, what="PLC open")
    sink = make_sink(pair.dev, ack=True, ack_timeout_ms=100, retries=2, reopen_interval_s=0.2)
    sink.emit(result(1, "CODE-00001"))
    sink.emit(result(2, "CODE-00002"))
    # Two rounds of 1 + 2 tries each, all unanswered: counted, nothing dropped, order held.
    wait_for(lambda: sink.state()["timeouts"] >= 6, what="6 timeouts")
    st_ = sink.state()
    assert st_["delivered"] == 0 and st_["queued"] == 2 and st_["dropped"] == 0
    assert set(plc.frames) == {b"\x02CODE-00001\x03"}  # frame 2 waits behind frame 1
    acking.set()
    wait_for(lambda: sink.state()["delivered"] == 2, what="both delivered")
    assert sink.state()["queued"] == 0
    assert list(dict.fromkeys(ids_of(plc.frames))) == [1, 2]


# -- 4. triggers from the PLC -------------------------------------------------------------------

def test_lon_loff_reach_trigger_handler_in_order(pair, make_sink, plcs) -> None:
    got: list[str] = []
    plc = plcs(pair)
    sink = make_sink(pair.dev, trigger_handler=got.append)
    wait_for(lambda: sink.state()["connected"], what="sink connected")
    plc.send(b"LON\r\nLOFF\n\x02LON\x03LOFF\rNOISE\r\nLO")
    plc.send(b"N\r")
    want = ["on", "off", "on", "off", "on"]
    wait_for(lambda: len(got) >= len(want), what="5 triggers")
    assert got == want
    # Triggers and results share the port without disturbing each other.
    sink.emit(result(1, "CODE-00001"))
    wait_for(lambda: plc.frames == [b"\x02CODE-00001\x03"], what="frame after triggers")


# -- 5. the port vanishes and comes back ---------------------------------------------------------

def test_port_vanishes_and_returns_nothing_lost(pair, make_sink, plcs, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    plc = plcs(pair)
    sink = make_sink(pair.dev)
    for i in range(1, 11):
        sink.emit(result(i, f"CODE-{i:05d}"))
    wait_for(lambda: len(plc.frames) == 10, what="first 10 frames")
    pair.kill()  # adapter unplugged
    for i in range(11, 31):  # the line keeps producing results meanwhile
        sink.emit(result(i, f"CODE-{i:05d}"))
        time.sleep(0.01)
    wait_for(lambda: not sink.state()["connected"], what="sink notices the loss")
    time.sleep(0.5)  # several reopen attempts (0.1 s apart) while the port is gone
    assert sink.state()["queued"] == 20
    pair.start()  # plugged back in: same link names, new /dev/pts behind them
    wait_for(lambda: len(plc.frames) >= 30, what="all 30 frames")
    assert ids_of(plc.frames) == list(range(1, 31))
    wait_for(lambda: sink.state()["queued"] == 0, what="outbox empty")
    lost = [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1 and pair.dev in lost[0], lost


def test_failed_write_keeps_frame_and_reopens(pair, make_sink, plcs, caplog) -> None:
    """A write that fails as an unplugged adapter's does (EIO) must leave the frame queued.

    Unplugging socat usually shows up on the idle read first, so the write path is forced
    here: the real write is wrapped to fail once, like pyserial does on EIO.
    """
    import serial

    caplog.set_level(logging.INFO, logger=LOGGER)
    plc = plcs(pair)
    sink = make_sink(pair.dev)
    real_write = sink._write
    failures = []

    def flaky_write(frame: bytes) -> None:
        if not failures:
            failures.append(frame)
            raise serial.SerialException("write failed: [Errno 5] Input/output error")
        real_write(frame)

    sink._write = flaky_write
    for i in range(1, 4):
        sink.emit(result(i, f"CODE-{i:05d}"))
    wait_for(lambda: len(plc.frames) >= 3, what="3 frames")
    assert failures == [b"\x02CODE-00001\x03"]
    assert ids_of(plc.frames) == [1, 2, 3]
    wait_for(lambda: sink.state()["delivered"] == 3, what="3 delivered", detail=sink.state)
    assert sum("lost" in r.getMessage() for r in caplog.records) == 1


def test_port_flapping_under_continuous_emits_with_ack(pair, make_sink, plcs) -> None:
    plc = plcs(pair, answer=lambda i, f: b"\x06")
    sink = make_sink(pair.dev, ack=True, ack_timeout_ms=300, retries=1)
    n = 60
    done = threading.Event()

    def produce() -> None:
        for i in range(1, n + 1):
            sink.emit(result(i, f"CODE-{i:05d}"))
            time.sleep(0.03)
        done.set()

    t = threading.Thread(target=produce)
    t.start()
    for _ in range(2):  # unplug and replug twice while results keep coming
        wait_for(lambda: len(plc.frames) >= 5, what="some frames before unplug")
        pair.kill()
        time.sleep(0.3)
        pair.start()
    t.join(30)
    assert done.is_set()
    wait_for(lambda: sink.state()["queued"] == 0, timeout=30, what="outbox empty")
    # At-least-once: an ACK lost in the unplug may repeat a frame, but none is missing and
    # first arrivals are in order.
    assert list(dict.fromkeys(ids_of(plc.frames))) == list(range(1, n + 1))


def test_missing_port_at_start_does_not_raise_and_delivers_later(tmp_path, make_sink, plcs, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    pair = SocatPair(tmp_path / "later")
    sink = make_sink(pair.dev)  # port does not exist yet
    for i in range(1, 6):
        sink.emit(result(i, f"CODE-{i:05d}"))
    time.sleep(0.5)  # a few reopen attempts
    st_ = sink.state()
    assert st_["connected"] is False and st_["queued"] == 5 and "open" in st_["last_error"]
    msgs = [r.getMessage() for r in caplog.records if "not available" in r.getMessage()]
    assert len(msgs) == 1 and msgs[0].startswith(f"serial port {pair.dev} not available: ")
    assert "retrying" in msgs[0]
    try:
        pair.start()
        plc = plcs(pair)
        wait_for(lambda: len(plc.frames) >= 5, what="5 frames")
        assert ids_of(plc.frames) == [1, 2, 3, 4, 5]
    finally:
        pair.stop()


# -- 6. SIGKILL with frames queued ---------------------------------------------------------------

CHILD = """
import sys
from edge_runtime.sinks.serial import SerialSink
port, outbox = sys.argv[1], sys.argv[2]
s = SerialSink("plc0", "cam0", {"port": port, "outbox": outbox, "reopen_interval_s": 0.1})
s.start()
for i in range(1, 6):
    s.emit({"id": i, "kind": "read", "text": f"CODE-{i:05d}"})
print("first", flush=True)
sys.stdin.readline()  # the parent unplugs the port, then says go
for i in range(6, 21):
    s.emit({"id": i, "kind": "read", "text": f"CODE-{i:05d}"})
print("queued", flush=True)
sys.stdin.readline()  # wait to be killed
"""


def test_sigkilled_process_frames_delivered_by_next_sink(pair, make_sink, plcs, tmp_path) -> None:
    outbox = str(tmp_path / "shared-outbox.db")
    plc = plcs(pair)
    child = subprocess.Popen([sys.executable, "-c", CHILD, pair.dev, outbox], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "first"
        wait_for(lambda: len(plc.frames) == 5, what="first 5 frames from the child")
        pair.kill()
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "queued"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    pair.start()
    sink = make_sink(pair.dev, outbox=outbox)
    wait_for(lambda: len(plc.frames) >= 20, what="15 more frames from the new sink",
             detail=lambda: (plc.frames, plc.opens, sink.state()))
    time.sleep(0.3)  # a duplicate of frames 1-5 would show up here
    assert ids_of(plc.frames) == list(range(1, 21))
    wait_for(lambda: sink.state()["queued"] == 0, what="outbox empty")


# -- configuration -----------------------------------------------------------------------------

def test_keys_and_bad_options_name_the_sink_and_key(tmp_path) -> None:
    assert KEYS == set(DEFAULTS)
    assert {"port", "baudrate", "parity", "stopbits", "checksum", "control", "ack", "outbox"} <= KEYS
    with pytest.raises(ValueError, match=r"serial sink 'plc9' option 'parity' must be one of N, E, O, M, S"):
        SerialSink("plc9", "cam0", {"port": "/dev/ttyUSB0", "parity": "X"})
    with pytest.raises(ValueError, match=r"unknown option\(s\) baud"):
        SerialSink("plc9", "cam0", {"port": "/dev/ttyUSB0", "baud": 9600})
    with pytest.raises(ValueError, match=r"'port'"):
        SerialSink("plc9", "cam0", {})
    with pytest.raises(ValueError, match=r"separator"):
        SerialSink("plc9", "cam0", {"port": "/dev/ttyUSB0", "separator": "\x03"})
