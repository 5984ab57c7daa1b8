"""Trigger windows: when the service reads, and what it owes the PLC when a window closes.

Modes:
  continuous  always reading; every new label is reported (tracker de-duplicates).
  window      reading only while the window is open (LON .. LOFF); every distinct code
              read in the window is reported; a window that read nothing reports a noread
              (unless trigger.noread = false).
  single      exactly one result per window: the first code read, or a noread when the
              window closes with nothing read. Reading stops for the rest of the window.

Trigger events come from other threads (a sink's I/O thread, a signal handler) and are
queued; the capture loop applies them between frames, so the window state is only ever
touched by one thread. Events carry their arrival time: a noread's first_seen/last_seen
are when the PLC opened and closed the window, not when the loop noticed.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MODES = ("continuous", "window", "single")
SOURCES = ("signal", "serial", "mqtt")

_ON = {"on", "lon", "true", "1", "open", "start"}
_OFF = {"off", "loff", "false", "0", "close", "stop"}


@dataclass
class Window:
    opened: float
    frames: int = 0
    results: int = 0
    last_frame: int = 0


def parse_state(value: Any) -> bool | None:
    """"on"/"LON"/True -> True, "off"/"LOFF"/False -> False, "toggle" -> None; else ValueError."""
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in _ON:
        return True
    if s in _OFF:
        return False
    if s == "toggle":
        return None
    raise ValueError(f"unknown trigger state {value!r} (on, off, LON, LOFF, toggle)")


class Trigger:
    def __init__(self, mode: str = "continuous", source: str = "signal", noread: bool = True, start_open: bool = False) -> None:
        if mode not in MODES:
            raise ValueError(f"trigger mode must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.source = source
        self.noread = noread
        self._events: queue.SimpleQueue[tuple[bool | None, float]] = queue.SimpleQueue()
        self.window: Window | None = None
        self.windows = 0
        if mode != "continuous" and start_open:
            self.window = Window(opened=time.time())
            self.windows = 1

    @property
    def continuous(self) -> bool:
        return self.mode == "continuous"

    @property
    def reading(self) -> bool:
        """Should the current frame be read at all? (Skipping saves CPU while closed.)"""
        if self.continuous:
            return True
        if self.window is None:
            return False
        return not (self.mode == "single" and self.window.results > 0)

    # -- producers (any thread)
    def push(self, state: bool | None, ts: float | None = None) -> None:
        """Queue on (True), off (False) or toggle (None)."""
        self._events.put((state, time.time() if ts is None else ts))

    def on_serial(self, what: Any) -> None:
        """SerialSink trigger_handler: called with "on"/"off" from the serial I/O thread."""
        self._from_peer(what, "serial")

    def on_signal(self) -> None:
        """SIGUSR1 toggles (signal handlers must not block: a queue put is fine)."""
        self.push(None)

    def on_mqtt(self, cmd: dict) -> dict | None:
        """The `trigger` part of the MQTT command handler: {"cmd":"trigger","state":"on"} or LON/LOFF."""
        name = str(cmd.get("cmd", "")).strip()
        if name.upper() in ("LON", "LOFF"):
            self._from_peer(name, "mqtt")
        else:
            self._from_peer(cmd.get("state", "toggle"), "mqtt")
        return {"ok": True}

    def _from_peer(self, what: Any, peer: str) -> None:
        try:
            state = parse_state(what)
        except ValueError as exc:
            log.warning("trigger from %s ignored: %s", peer, exc)
            return
        if self.source != peer:
            log.warning("trigger from %s ignored: trigger.source is %s", peer, self.source)
            return
        self.push(state)

    # -- consumer (the capture loop)
    def poll(self) -> list[tuple[str, float, Window]]:
        """Apply queued events; returns transitions [("open"|"close", ts, window), ...] in order."""
        out: list[tuple[str, float, Window]] = []
        while True:
            try:
                state, ts = self._events.get_nowait()
            except queue.Empty:
                return out
            if self.continuous:
                continue
            want = (self.window is None) if state is None else state
            if want and self.window is None:
                self.window = Window(opened=ts)
                self.windows += 1
                out.append(("open", ts, self.window))
            elif not want and self.window is not None:
                out.append(("close", ts, self.window))
                self.window = None
            # A repeated LON while open (or LOFF while closed) changes nothing: PLCs resend.

    def state(self) -> dict:
        return {
            "mode": self.mode,
            "source": self.source,
            "open": self.continuous or self.window is not None,
            "windows": self.windows,
        }
