"""Real pseudo-terminal pairs for serial tests: a stand-in for a USB serial adapter + PLC.

`SocatPair` runs ``socat -d -d pty,raw,echo=0,link=DIR/dev pty,raw,echo=0,link=DIR/plc``:
the sink opens DIR/dev, the test plays the PLC on DIR/plc. Killing socat makes the device
vanish the way an unplugged USB adapter does (reads/writes fail with EIO, the path is gone);
`start()` again brings it back under the same link names (new /dev/pts numbers behind them).

`OsPty` is the plain ``os.openpty()`` option: no subprocess, but it cannot vanish and come back.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import termios
import time
import tty
from pathlib import Path


class SocatPair:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dev = str(self.dir / "dev")  # the sink's side
        self.plc = str(self.dir / "plc")  # the PLC's side
        self.log = self.dir / "socat.log"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "SocatPair":
        """Start socat and wait until both links exist and it is forwarding data."""
        if self._proc is not None:
            raise RuntimeError("socat already running")
        self._unlink()  # stale links from a SIGKILLed socat would point at dead or reused ptys
        self.log.write_bytes(b"")
        with open(self.log, "ab") as err:
            self._proc = subprocess.Popen(
                ["socat", "-d", "-d", f"pty,raw,echo=0,link={self.dev}", f"pty,raw,echo=0,link={self.plc}"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"socat exited with {self._proc.returncode}: {self.log.read_text()}")
            if (os.path.exists(self.dev) and os.path.exists(self.plc)
                    and b"starting data transfer loop" in self.log.read_bytes()):
                return self
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"socat did not come up within {timeout} s: {self.log.read_text()}")

    def stop(self) -> None:
        """Kill socat: both ports vanish (SIGTERM lets socat remove its links; we make sure)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self._unlink()

    kill = stop  # reads better in tests: "the adapter is unplugged"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def open_plc(self) -> int:
        """Open the PLC side raw (no echo, no line editing) and return its fd.

        TCSANOW, not setraw's default TCSAFLUSH: frames the sink sent before the PLC opened
        its end are waiting in the input queue and must not be flushed away.
        """
        fd = os.open(self.plc, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd, termios.TCSANOW)
        return fd

    def _unlink(self) -> None:
        for p in (self.dev, self.plc):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def __enter__(self) -> "SocatPair":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class OsPty:
    """A kernel pty pair without socat: `name` is the device the sink opens, `master` the PLC end."""

    def __init__(self) -> None:
        self.master, self._slave = os.openpty()
        tty.setraw(self.master, termios.TCSANOW)
        tty.setraw(self._slave, termios.TCSANOW)
        self.name = os.ttyname(self._slave)
        # The slave fd stays open so the master does not see a hang-up between sink reopens.

    def close(self) -> None:
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "OsPty":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_until(fd: int, predicate, timeout: float = 20.0) -> bytes:
    """Read from `fd` until predicate(data) is true; return everything read (raises on timeout)."""
    data = b""
    deadline = time.monotonic() + timeout
    while not predicate(data):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waited {timeout} s; got {data!r}")
        r, _, _ = select.select([fd], [], [], min(left, 0.2))
        if r:
            data += os.read(fd, 4096)
    return data
