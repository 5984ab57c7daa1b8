"""Real pseudo-terminal pairs for serial tests: a stand-in for a USB serial adapter + PLC.

`SocatPair` runs ``socat -d -d pty,raw,echo=0,link=DIR/dev pty,raw,echo=0,link=DIR/plc``:
the sink opens DIR/dev, the test plays the PLC on DIR/plc. Killing socat makes the device
vanish the way an unplugged USB adapter does (reads/writes fail with EIO, the path is gone);
`start()` again brings it back under the same link names (new /dev/pts numbers behind them).
The socat process itself is the soak bench's SerialLine (edge_runtime/bench/peers.py): one
implementation of the pty pair, which this module only extends with the test's side of it.

`OsPty` is the plain ``os.openpty()`` option: no subprocess, but it cannot vanish and come back.
"""

from __future__ import annotations

import os
import select
import termios
import time
import tty
from pathlib import Path

from edge_runtime.bench.peers import SerialLine


class SocatPair(SerialLine):
    """The soak bench's SerialLine (edge_runtime/bench/peers.py) with what tests add: the PLC
    side opened by the test itself, and use as a context manager."""

    kill = SerialLine.stop  # reads better in tests: "the adapter is unplugged"

    @property
    def log(self) -> Path:
        return self._log

    def open_plc(self) -> int:
        """Open the PLC side raw (no echo, no line editing) and return its fd.

        TCSANOW, not setraw's default TCSAFLUSH: frames the sink sent before the PLC opened
        its end are waiting in the input queue and must not be flushed away.
        """
        fd = os.open(self.plc, os.O_RDWR | os.O_NOCTTY)
        try:
            tty.setraw(fd, termios.TCSANOW)
        except termios.error as e:
            # termios.error is not an OSError: a socat that dies between the open and the
            # setraw (the adapter unplugged again) must look like any other failed open to
            # callers that retry on OSError, not kill their thread.
            os.close(fd)
            raise OSError(*e.args) from e
        return fd

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
