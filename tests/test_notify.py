"""The sd_notify client against a real AF_UNIX datagram socket, as systemd would provide it."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid

import pytest

from edge_runtime.service.notify import Heartbeat, Notifier


class Listener:
    """Plays systemd's side of NOTIFY_SOCKET: collects every datagram."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address
        sock.settimeout(0.05)

    def recv_all(self, quiet: float = 0.3) -> list[str]:
        """Every datagram until the socket stays quiet for `quiet` seconds."""
        out: list[str] = []
        last = time.monotonic()
        while time.monotonic() - last < quiet:
            try:
                out.append(self.sock.recv(4096).decode())
                last = time.monotonic()
            except TimeoutError:
                pass
        return out

    def wait_for(self, predicate, timeout: float = 20.0) -> list[str]:
        """Datagrams received until one satisfies predicate (fails after timeout)."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            got.append(msg)
            if predicate(msg):
                return got
        raise AssertionError(f"no matching datagram within {timeout}s; got {got!r}")


@pytest.fixture
def listener():
    # A short directory, not tmp_path: AF_UNIX paths are limited to 107 bytes.
    d = tempfile.mkdtemp(prefix="sdn-")
    path = os.path.join(d, "notify.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    yield Listener(s, path)
    s.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def abstract_listener():
    name = f"edge-runtime-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(b"\0" + name.encode())
    yield Listener(s, "@" + name)
    s.close()


def test_exact_datagrams_on_a_filesystem_socket(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address})
    assert n.enabled
    assert n.ready()
    assert n.status("reads/s 12.5 mqtt0 connected")
    assert n.watchdog()
    assert n.stopping()
    assert listener.recv_all() == ["READY=1", "STATUS=reads/s 12.5 mqtt0 connected", "WATCHDOG=1", "STOPPING=1"]


def test_abstract_namespace_socket(abstract_listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": abstract_listener.address})
    assert n.ready("started")
    assert abstract_listener.recv_all() == ["READY=1\nSTATUS=started"]


def test_reloading_carries_monotonic_usec(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    (msg,) = listener.recv_all()
    first, second = msg.split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_status_cannot_forge_other_fields(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address})
    n.status("ok\nREADY=1\rWATCHDOG=1")
    (msg,) = listener.recv_all()
    assert "\n" not in msg
    assert msg == "STATUS=ok READY=1 WATCHDOG=1"


def test_unset_socket_is_a_silent_no_op():
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None
    hb = Heartbeat(n, status=lambda: "x", interval=0.1)
    hb.start()
    hb.beat()
    hb.stop()
    assert hb.pings == 0


def test_socket_gone_never_raises_and_logs_once(tmp_path, caplog):
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.WARNING, logger="edge_runtime.notify"):
        for _ in range(5):
            assert n.watchdog() is False
    assert n.failures == 5
    warnings = [r for r in caplog.records if "NOTIFY_SOCKET" in r.getMessage()]
    assert len(warnings) == 1
    assert "gone.sock" in warnings[0].getMessage()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "{pid}"}, 2.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}, None),  # addressed to another process
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "abc"}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env, expected):
    env = {k: v.format(pid=os.getpid()) for k, v in env.items()}
    n = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent", **env})
    assert n.watchdog_interval() == expected


def test_heartbeat_period_is_half_of_watchdog_usec(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "2000000"})
    assert Heartbeat(n).period == 1.0


def _pings(msgs: list[str]) -> int:
    return sum(m == "WATCHDOG=1" for m in msgs)


def test_heartbeat_pings_while_beats_come_and_stops_when_they_stop(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"})
    hb = Heartbeat(n)
    assert hb.period == pytest.approx(0.1)
    beating = threading.Event()
    beating.set()
    done = threading.Event()

    def capture_loop() -> None:  # a loop processing ~100 frames/s, until it "hangs"
        while not done.is_set():
            if beating.is_set():
                hb.beat()
            time.sleep(0.01)

    t = threading.Thread(target=capture_loop)
    t.start()
    hb.start()
    try:
        # Pings keep arriving while frames flow: wait for several in a row.
        got: list[str] = []
        deadline = time.monotonic() + 20
        while _pings(got) < 5 and time.monotonic() < deadline:
            got += listener.recv_all(quiet=0.05)
        assert _pings(got) >= 5
        # The capture loop hangs: at most one in-flight ping, then silence.
        beating.clear()
        listener.recv_all(quiet=0.5)  # drain what was already in flight
        assert _pings(listener.recv_all(quiet=1.0)) == 0
        # And it recovers when frames flow again.
        beating.set()
        listener.wait_for(lambda m: m == "WATCHDOG=1")
    finally:
        done.set()
        t.join()
        hb.stop()


def test_heartbeat_without_any_beat_never_pings(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"})
    hb = Heartbeat(n)
    hb.start()
    try:
        assert _pings(listener.recv_all(quiet=0.6)) == 0
    finally:
        hb.stop()
    assert hb.pings == 0


def test_heartbeat_sends_status_lines(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address})  # no watchdog: status only
    calls = []

    def status() -> str:
        calls.append(1)
        return f"reads/s 3.0 frames {len(calls)}"

    hb = Heartbeat(n, status=status, status_every=0.05)
    hb.start()
    try:
        listener.wait_for(lambda m: m == "STATUS=reads/s 3.0 frames 3")
    finally:
        hb.stop()


def test_heartbeat_survives_a_failing_status_callable(listener, caplog):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "100000"})

    def broken() -> str:
        raise RuntimeError("boom")

    hb = Heartbeat(n, status=broken, status_every=0.05)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.notify"):
        hb.start()
        try:
            time.sleep(0.3)
            hb.beat()
            listener.wait_for(lambda m: m == "WATCHDOG=1")
        finally:
            hb.stop()
    assert sum("status line failed" in r.getMessage() for r in caplog.records) == 1


def test_stop_joins_the_thread_promptly(listener):
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "60000000"})
    hb = Heartbeat(n, status=lambda: "x", status_every=30.0)
    hb.start()
    thread = hb._thread
    assert thread is not None and thread.is_alive()
    hb.stop()
    assert not thread.is_alive()


def test_status_line_rates_and_sink_states():
    from edge_runtime.service.notify import StatusLine

    now = [100.0]
    state = {
        "frames": 0,
        "reads": 0,
        "source": {"state": "open"},
        "sinks": {"plant": {"connected": True, "queued": 0}, "plc": {"connected": False, "queued": 12}},
    }
    line = StatusLine(lambda: state, clock=lambda: now[0])
    assert line() == "0 frames, 0 reads, source open, plant connected, plc down (12 queued)"
    now[0] += 10.0
    state.update(frames=300, reads=12)
    state["source"] = {"state": "reopening"}
    assert line() == "30.0 frames/s, 1.2 reads/s, source reopening, plant connected, plc down (12 queued)"


def test_status_line_shows_a_model_fallback():
    from edge_runtime.service.notify import StatusLine

    state = {"frames": 0, "reads": 0, "source": {"state": "open"}, "sinks": {},
             "model": "1.0.0", "model_fallback": "model 1.1.0 refused: sha256 mismatch"}
    assert StatusLine(lambda: state)().endswith("source open, model 1.0.0 (fallback)")
    state["model_fallback"] = None
    assert "fallback" not in StatusLine(lambda: state)()
