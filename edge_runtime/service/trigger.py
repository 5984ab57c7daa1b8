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

Windows shorter than one frame (the rule, also in README.md): every window sees at least
one frame. A LOFF that arrives before its window saw a frame closes the window right after
its first frame; trigger events that arrive while a window waits for that frame are folded
into it (counted in `coalesced`): a PLC cannot get answers faster than the camera takes
pictures, and a flood of LON/LOFF pairs costs one window per frame, not one result per
pair. If the folded events leave the trigger "on", a new window opens when that one closes.
A window still without a frame MAX_CLOSE_DELAY_S after its LOFF closes all the same.
At most MAX_EVENTS_PER_POLL events are applied per loop pass, so frames keep flowing.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

MODES = ("continuous", "window", "single")
SOURCES = ("signal", "serial", "mqtt", "opcua", "modbus")

MAX_EVENTS_PER_POLL = 2000
# A window waiting for its first frame closes anyway this long after its LOFF (a stalled
# camera must not leave the PLC without an answer).
MAX_CLOSE_DELAY_S = 1.0
_ON = {"on", "lon", "true", "1", "open", "start"}
_OFF = {"off", "loff", "false", "0", "close", "stop"}


@dataclass
class Window:
    opened: float
    frames: int = 0
    results: int = 0
    last_frame: int = 0
    close_at: float | None = None  # LOFF came before the first frame: close after it
    reopen: bool = False  # the events folded into it leave the trigger on
    reopen_at: float = 0.0
    coalesced: int = 0  # trigger events folded into this window
    unread: list | None = None  # last corners of a code detected in it and not read
    reason: str | None = None  # why that code was not read


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
        self.coalesced = 0
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

    def on_peer(self, what: Any, peer: str) -> str | None:
        """Any sink's trigger_handler ("on"/"off"/"toggle" from its I/O thread); `peer` is
        the sink's kind, which must be trigger.source. Returns why it was ignored, if it was."""
        return self._from_peer(what, peer)

    def on_signal(self) -> None:
        """SIGUSR1 toggles (signal handlers must not block: a queue put is fine)."""
        self.push(None)

    def on_mqtt(self, cmd: dict) -> dict | None:
        """The `trigger` part of the MQTT command handler: {"cmd":"trigger","state":"on"} or LON/LOFF."""
        name = str(cmd.get("cmd", "")).strip()
        what = name if name.upper() in ("LON", "LOFF") else cmd.get("state", "toggle")
        error = self._from_peer(what, "mqtt")
        return {"ok": False, "error": error} if error else {"ok": True}

    def _from_peer(self, what: Any, peer: str) -> str | None:
        """Queue a peer's trigger; returns why it was ignored (None when queued)."""
        try:
            state = parse_state(what)
        except ValueError as exc:
            log.warning("trigger from %s ignored: %s", peer, exc)
            return str(exc)
        if self.source != peer:
            log.warning("trigger from %s ignored: trigger.source is %s", peer, self.source)
            return f"trigger.source is {self.source}"
        self.push(state)
        return None

    # -- consumer (the capture loop)
    def poll(self, limit: int = MAX_EVENTS_PER_POLL) -> list[tuple[str, float, Window]]:
        """Apply queued events (at most `limit`); returns transitions
        [("open"|"close", ts, window), ...] in order."""
        out: list[tuple[str, float, Window]] = []
        self._close_if_due(out)
        for _ in range(limit):
            try:
                state, ts = self._events.get_nowait()
            except queue.Empty:
                break
            if self.continuous:
                continue
            w = self.window
            if w is not None and w.close_at is not None:
                # Waiting for its one frame: fold the event in, remember where it leaves the trigger.
                w.coalesced += 1
                self.coalesced += 1
                w.reopen = (not w.reopen) if state is None else state
                if w.reopen:
                    w.reopen_at = ts
                continue
            want = (w is None) if state is None else state
            if want and w is None:
                self.window = Window(opened=ts)
                self.windows += 1
                out.append(("open", ts, self.window))
            elif not want and w is not None:
                if w.frames == 0 and w.results == 0:
                    w.close_at = ts
                    continue
                out.append(("close", ts, w))
                self.window = None
            # A repeated LON while open (or LOFF while closed) changes nothing: PLCs resend.
        return out

    def _close_if_due(self, out: list) -> None:
        w = self.window
        if w is None or w.close_at is None:
            return
        if w.frames == 0 and time.time() - w.close_at < MAX_CLOSE_DELAY_S:
            return
        out.append(("close", w.close_at, w))
        self.window = None
        if w.reopen:
            self.window = Window(opened=w.reopen_at)
            self.windows += 1
            out.append(("open", w.reopen_at, self.window))

    def state(self) -> dict:
        return {
            "mode": self.mode,
            "source": self.source,
            "open": self.continuous or self.window is not None,
            "windows": self.windows,
            "coalesced": self.coalesced,
        }
