"""The systemd notify protocol (sd_notify) and a watchdog that only a working pipeline can feed.

Why our own 100 lines instead of libsystemd/python-systemd: the protocol is one datagram of
`KEY=VALUE` lines to the AF_UNIX socket named in $NOTIFY_SOCKET, and a C dependency on every
ARM image for that is not worth it. Outside systemd (tests, `make run`, a container) every
method is a silent no-op, so the service calls them unconditionally.

Why `Heartbeat` exists: pinging WATCHDOG=1 from a timer thread proves only that the timer
thread is alive. A camera driver that hangs inside read() leaves every thread but the capture
loop running, and systemd would never notice. So the capture loop calls `beat()` after each
processed frame, and the pinging thread sends WATCHDOG=1 only when a beat arrived since its last
ping: a stuck loop stops the pings and systemd restarts the service after WatchdogSec.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger("edge_runtime.notify")

# STATUS= is shown by `systemctl status`; keep it one short line.
_STATUS_MAX = 200


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; does nothing when it is unset.

    `Notifier.from_env()` is the normal constructor. Never raises on a send: a service that
    dies because systemd was restarted (or a test socket went away) would be worse than one
    that cannot report; the first failure is logged once, later ones are counted silently.
    """

    def __init__(self, address: str | None, env: Mapping[str, str] | None = None) -> None:
        self.address = address or None
        self._env = dict(os.environ if env is None else env)
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False
        self.failures = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        return cls(env.get("NOTIFY_SOCKET"), env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _sockaddr(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):
            # Linux abstract namespace: systemd writes it as "@name", the kernel wants "\0name".
            return b"\0" + self.address[1:].encode()
        return self.address

    def send(self, *fields: str) -> bool:
        """Send one datagram of `KEY=VALUE` lines; True when it was handed to the socket."""
        if not self.enabled or not fields:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(data, self._sockaddr())
                return True
            except OSError as exc:
                self.failures += 1
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "cannot notify systemd at NOTIFY_SOCKET=%s: %s (further failures not logged)",
                        self.address,
                        exc,
                        extra={"fields": {"notify_socket": self.address}},
                    )
                return False

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) finished: source, model and sinks are up."""
        fields = ["READY=1"]
        if status:
            fields.append(_status_field(status))
        return self.send(*fields)

    def status(self, text: str) -> bool:
        return self.send(_status_field(text))

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """A reload began; send ready() when it is done (systemd waits for it).

        MONOTONIC_USEC is required by Type=notify-reload (systemd >= 253) to match the reload
        to this message; older systemd ignores the unknown field.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """WatchdogSec in seconds if systemd expects pings from this process, else None.

        Same rules as sd_watchdog_enabled(): WATCHDOG_USEC must be a positive integer, and
        if WATCHDOG_PID is set it must be our pid (the variable leaked into a child is not
        addressed to the child). Ping at half this interval.
        """
        raw = self._env.get("WATCHDOG_USEC")
        if not raw:
            return None
        try:
            usec = int(raw)
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
            return None
        if usec <= 0:
            return None
        pid = self._env.get("WATCHDOG_PID")
        if pid:
            try:
                if int(pid) != os.getpid():
                    return None
            except ValueError:
                return None
        return usec / 1_000_000

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def _status_field(text: str) -> str:
    # A newline would start a new KEY=VALUE line and could forge READY=1 or WATCHDOG=1.
    one_line = " ".join(str(text).split())
    return "STATUS=" + one_line[:_STATUS_MAX]


class Heartbeat:
    """Pings the systemd watchdog only while the capture loop proves it is making progress.

    heartbeat = Heartbeat(notifier, status=service.status_line)
    heartbeat.start()            # after notifier.ready()
    ... heartbeat.beat()         # in the capture loop, after every processed frame
    heartbeat.stop()             # on shutdown, before notifier.stopping()

    The thread also sends STATUS= from `status()` every `status_every` seconds. It is not
    started at all when there is nothing to do (no NOTIFY_SOCKET). `interval` overrides
    WatchdogSec (seconds) for tests.
    """

    def __init__(
        self,
        notifier: Notifier,
        status: Callable[[], str] | None = None,
        status_every: float = 5.0,
        interval: float | None = None,
    ) -> None:
        self.notifier = notifier
        self._status = status
        self.status_every = status_every
        watchdog = interval if interval is not None else notifier.watchdog_interval()
        # Half the interval, as systemd recommends, so one late ping is not a restart.
        self.period: float | None = watchdog / 2 if watchdog else None
        self._beats = 0
        self._seen = 0
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status_warned = False

    def beat(self) -> None:
        """Called by the capture loop after each frame; cheap (one integer store)."""
        self._beats += 1

    def start(self) -> None:
        if self._thread is not None or not self.notifier.enabled:
            return
        if self.period is None and self._status is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="sd-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        tick = min(x for x in (self.period, self.status_every) if x is not None)
        next_status = time.monotonic()
        while not self._stop.wait(tick):
            if self.period is not None:
                beats = self._beats
                if beats != self._seen:
                    self._seen = beats
                    if self.notifier.watchdog():
                        self.pings += 1
            if self._status is not None and time.monotonic() >= next_status:
                next_status = time.monotonic() + self.status_every
                self._send_status()

    def _send_status(self) -> None:
        try:
            text = self._status()  # type: ignore[misc]
        except Exception as exc:  # a bug in a status line must not kill the watchdog thread
            if not self._status_warned:
                self._status_warned = True
                log.warning("status line failed: %s", exc)
            return
        if text:
            self.notifier.status(text)


class StatusLine:
    """Turns `Service.status()` into the one line `systemctl status edge-runtime` shows.

        "29.8 frames/s, 1.2 reads/s, source open, plant connected, plc down (12 queued)"

    Rates are over the time since the previous call (so over Heartbeat's status_every), which
    is what an operator at the machine wants to know: is it reading *now*.
    """

    def __init__(self, status: Callable[[], dict], clock: Callable[[], float] = time.monotonic) -> None:
        self._status = status
        self._clock = clock
        self._last: tuple[float, int, int] | None = None

    def __call__(self) -> str:
        s = self._status()
        now, frames, reads = self._clock(), int(s.get("frames", 0)), int(s.get("reads", 0))
        parts = []
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            parts.append(f"{(frames - self._last[1]) / dt:.1f} frames/s, {(reads - self._last[2]) / dt:.1f} reads/s")
        else:
            parts.append(f"{frames} frames, {reads} reads")
        self._last = (now, frames, reads)
        source = s.get("source") or {}
        parts.append(f"source {source.get('state', '?')}")
        for name, st in (s.get("sinks") or {}).items():
            text = f"{name} {'connected' if st.get('connected') else 'down'}"
            if st.get("queued"):
                text += f" ({st['queued']} queued)"
            parts.append(text)
        if s.get("model_fallback"):
            # The configured model was refused and an older one runs: visible at a glance.
            parts.append(f"model {s.get('model') or 'none'} (fallback)")
        return ", ".join(parts)
