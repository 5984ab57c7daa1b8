"""Real peers for the soak bench and the tests: a mosquitto broker, an MQTT subscriber playing
the plant, a socat pseudo-terminal pair standing in for a USB serial adapter, and a PLC on its
far end.

They live in the package (not in tests/) because `edge-runtime bench soak` runs on a device
or a CI box without the test tree; tests/mosquitto.py and tests/pty_pair.py re-export the
broker and the pty pair and add the pytest fixtures, so there is one of each. Every peer can be broken and repaired on purpose
(broker stop/start, adapter unplug/replug), which is the point: the soak checks that the
service loses nothing while they misbehave.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import termios
import threading
import time
import tty
from pathlib import Path

HOST = "127.0.0.1"
STX, ETX, ACK = 0x02, 0x03, 0x06


class PeerError(RuntimeError):
    """A peer (mosquitto, socat) could not be started (tests know it as BrokerError)."""


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # A SIGKILLed bench must not leave a broker or socat holding ports and ptys.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Broker:
    """One mosquitto process on a loopback port, with its own config, log and persistence db
    in `directory` (a fresh temp dir, removed by close(), when none is given).

    One implementation for the soak bench and the tests (tests/mosquitto.py re-exports it).
    Broker(port=None) picks a free port at construction, so a caller may learn the port, point
    a client at it and only later call start() (the "broker down at start" case); restart()
    comes back on the same port. `extra` is appended right after the listener line, so
    listener options (cafile/certfile/keyfile, password_file, acl_file) apply to it.

    persistence=True keeps sessions and retained messages across stop()/start() (mosquitto
    saves its db on SIGTERM), which a subscriber with clean_session=False needs to get what
    was published while it was reconnecting.
    """

    def __init__(self, directory: str | os.PathLike | None = None, port: int | None = None, *,
                 extra: str = "", allow_anonymous: bool = True, persistence: bool = False,
                 host: str = HOST) -> None:
        self.host = host
        self.port = port or free_port(host)
        self._own_dir = directory is None
        self.dir = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="mosquitto-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.extra = extra
        self.allow_anonymous = allow_anonymous
        self.persistence = persistence
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        # stderr goes to a file, not a pipe nobody reads: only start-up errors land there.
        self._err_path = self.dir / "mosquitto.stderr"
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            self.extra,
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            # Run as root (CI, a device's bench): without this mosquitto drops to user
            # "mosquitto" and can no longer write its log or persistence db in our dir.
            "user root",
            f"log_dest file {self.log_path}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "log_timestamp true",
            # A soak's persistent subscriber may be offline through many results: queue them all.
            "max_queued_messages 1000000",
            "max_inflight_messages 100",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        else:
            lines += ["persistence false"]
        return "\n".join(line for line in lines if line) + "\n"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 20.0) -> "Broker":
        """Start and return only once the port accepts connections from *this* process
        (mosquitto logs "running" after its listeners are open)."""
        if self.running:
            return self
        if not os.path.exists(self.exe):
            raise PeerError("mosquitto is not installed (apt install mosquitto)")
        self.conf_path.write_text(self.config_text())
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self._err_path, "wb") as err:
            self.proc = subprocess.Popen([self.exe, "-c", str(self.conf_path)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_die_with_parent)
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err_text = self._err_path.read_text(errors="replace").strip()
                raise PeerError(f"mosquitto on port {self.port} exited with {self.proc.returncode}: "
                                f"{err_text} {self.log_tail(offset)}")
            if " running" in self.log_tail(offset, n=100000) and self._accepts():
                return self
            time.sleep(0.05)
        self.kill()
        raise PeerError(f"mosquitto on port {self.port} did not accept connections within {timeout} s: "
                        f"{self.log_tail(offset)}")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM: the persistence db is saved), SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def kill(self) -> None:
        """Abrupt death: no db save, sockets reset."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def restart(self, timeout: float = 20.0) -> "Broker":
        """Stop and start again on the same port (clients reconnect to the same address)."""
        self.stop()
        return self.start(timeout)

    def reload(self) -> None:
        """SIGHUP: mosquitto re-reads its password and ACL files (edits a plant makes without
        restarting the broker)."""
        if self.running:
            self.proc.send_signal(signal.SIGHUP)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log_tail(self, offset: int = 0, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")[-n:]
        except OSError:
            return ""

    def _accepts(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def __repr__(self) -> str:
        return f"Broker({self.host}:{self.port}, running={self.running})"


class PlantSubscriber:
    """The plant's MQTT client: a persistent session (clean_session=False, qos 1), so results
    published while it reconnects after a broker restart are queued for it, not lost.

    Records every message per topic; `ids()` parses result ids. Duplicates are kept: QoS 1 is
    at-least-once, and counting them is part of the report."""

    def __init__(self, port: int, topic: str = "#", client_id: str = "soak-plant", *, keep_payloads: bool = True) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.port = port
        # A long soak keeps only (topic, id): the bench shares its process (and RSS figure)
        # with the service, and 10,000 payloads would be ~5 MB of the bench's own memory.
        self.keep_payloads = keep_payloads
        self.messages: list[tuple[str, bytes]] = []
        self._ids: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311, clean_session=False)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: None if rc.is_failure else c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_message(self, client, userdata, msg) -> None:  # noqa: ANN001
        payload = bytes(msg.payload)
        rid = _result_id(payload)
        with self._lock:
            self._ids.append((msg.topic, rid))
            if self.keep_payloads:
                self.messages.append((msg.topic, payload))

    def start(self, timeout: float = 20.0) -> "PlantSubscriber":
        self.client.connect_async(HOST, self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise PeerError(f"subscriber could not subscribe on port {self.port} within {timeout} s")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [p for t, p in self.messages if t == topic]

    def topics(self) -> set[str]:
        with self._lock:
            return {t for t, _ in self._ids}

    def count(self, topic: str) -> int:
        with self._lock:
            return sum(1 for t, _ in self._ids if t == topic)

    def ids(self, topic: str) -> list[int]:
        """Result ids in arrival order; -1 for a message that is not a result object."""
        with self._lock:
            return [i for t, i in self._ids if t == topic]


def _result_id(payload: bytes) -> int:
    try:
        return int(json.loads(payload)["id"])
    except (ValueError, KeyError, TypeError, RecursionError):
        return -1  # a malformed result: counted as such, never silently skipped


class SerialLine:
    """``socat pty,link=DIR/dev pty,link=DIR/plc``: the service opens DIR/dev, the PLC reads
    DIR/plc. stop() is an unplugged adapter (the device vanishes, I/O fails with EIO);
    start() plugs it back under the same path."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dev = str(self.dir / "dev")
        self.plc = str(self.dir / "plc")
        self._log = self.dir / "socat.log"
        self._proc: subprocess.Popen | None = None
        self.generation = 0  # bumped on every start, so the PLC knows to reopen

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> "SerialLine":
        if self.running:
            return self
        if shutil.which("socat") is None:
            raise PeerError("socat is not installed (apt install socat)")
        self._unlink()
        self._log.write_bytes(b"")
        with open(self._log, "ab") as err:
            self._proc = subprocess.Popen(
                ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.dev}", f"pty,raw,echo=0,link={self.plc}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise PeerError(f"socat exited with {self._proc.returncode}: {self._log.read_text(errors='replace')}")
            if os.path.exists(self.dev) and os.path.exists(self.plc) and b"starting data transfer loop" in self._log.read_bytes():
                self.generation += 1
                return self
            time.sleep(0.02)
        self.stop()
        raise PeerError(f"socat did not come up within {timeout} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._unlink()

    def _unlink(self) -> None:
        for p in (self.dev, self.plc):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


class Plc(threading.Thread):
    """A PLC on the far end of a SerialLine: collects STX body ETX frames (body unescaped
    back to the payload bytes) and answers each complete frame with ACK.

    It survives the line vanishing: on EIO or hang-up it closes and reopens the new pty once
    the line is back. Bytes outside a frame are counted as `garbage` (a framing bug shows
    up there)."""

    def __init__(self, line: SerialLine, *, ack: bool = True) -> None:
        super().__init__(name="soak-plc", daemon=True)
        self.line = line
        self.ack = ack
        self.frames: list[bytes] = []
        self.garbage = 0
        self.reopens = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def snapshot(self) -> list[bytes]:
        with self._lock:
            return list(self.frames)

    def run(self) -> None:
        from edge_runtime.sinks.serial_frame import unescape

        fd: int | None = None
        gen = -1
        buf = bytearray()
        while not self._halt.is_set():
            if fd is None or gen != self.line.generation:
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
                    fd = None
                if not (self.line.running and os.path.exists(self.line.plc)):
                    time.sleep(0.05)
                    continue
                try:
                    fd = os.open(self.line.plc, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                    tty.setraw(fd)
                except (OSError, termios.error):  # termios.error: socat died after the open
                    if fd is not None:
                        with contextlib.suppress(OSError):
                            os.close(fd)
                    fd = None
                    time.sleep(0.05)
                    continue
                gen = self.line.generation
                self.reopens += 1
                buf.clear()  # half a frame from before the unplug is gone for good
            try:
                r, _, _ = select.select([fd], [], [], 0.2)
                if not r:
                    continue
                data = os.read(fd, 65536)
            except (OSError, ValueError):
                data = b""
            if not data:  # hang-up / EIO: the adapter is gone; wait for it to come back
                with contextlib.suppress(OSError):
                    os.close(fd)
                fd = None
                time.sleep(0.05)
                continue
            buf += data
            while True:
                start = buf.find(bytes([STX]))
                if start < 0:
                    self.garbage += len(buf)
                    buf.clear()
                    break
                self.garbage += start
                end = buf.find(bytes([ETX]), start + 1)
                if end < 0:
                    del buf[:start]
                    break
                body = bytes(buf[start + 1:end])
                del buf[:end + 1]
                with self._lock:
                    self.frames.append(unescape(body))
                if self.ack:
                    with contextlib.suppress(OSError):
                        os.write(fd, bytes([ACK]))
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size in MB from /proc (0.0 where /proc is not available)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0
