"""Stray ACK/NAK bytes (issue 15 item 6): a PLC or a noisy line sending ACK/NAK while nothing
awaits an answer must not grow memory. Real pseudo-terminals (socat), the test plays the PLC."""

from __future__ import annotations

import logging
import os
import threading

from test_serial_sink import LOGGER, make_sink, pair, plcs, result, wait_for  # noqa: F401 (fixtures)

FLOOD = 5 * 1024 * 1024


def flood(plc, byte: bytes, n: int) -> threading.Thread:
    """Write n copies of `byte` to the PLC end from a thread (the pty blocks when full)."""

    def run() -> None:
        wait_for(lambda: plc._fd is not None, what="PLC port open")
        chunk = byte * 65536
        left = n
        while left:
            left -= os.write(plc._fd, chunk[:min(left, len(chunk))])

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


class MaxLen(threading.Thread):
    """Samples len(sink._acks) (the answers kept for the writer) while the flood runs."""

    def __init__(self, sink) -> None:
        super().__init__(daemon=True)
        self.sink, self.max, self.halt = sink, 0, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.001):
            self.max = max(self.max, len(self.sink._acks))


def test_nak_flood_while_idle_is_counted_dropped_and_delivery_still_works(pair, make_sink, plcs, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    plc = plcs(pair, answer=lambda i, f: b"\x06")
    sink = make_sink(pair.dev, ack=True, ack_timeout_ms=2000)
    wait_for(lambda: sink.state()["connected"], what="port open")
    sampler = MaxLen(sink)
    sampler.start()
    writer = flood(plc, b"\x15", FLOOD)
    wait_for(lambda: sink.state()["stray_bytes"] >= FLOOD, timeout=120, what="all stray bytes counted",
             detail=lambda: sink.state())
    writer.join(10)
    sampler.halt.set()
    sampler.join()
    assert sink.state()["stray_bytes"] == FLOOD
    assert sampler.max <= 4 and len(sink._acks) <= 4, sampler.max
    strays = [r for r in caplog.records if "stray_bytes" in r.getMessage()]
    assert len(strays) == 1 and pair.dev in strays[0].getMessage()  # one line for the burst

    # The next frame is answered by the PLC's ACK, not by a leftover NAK from the flood.
    sink.emit(result(1, "AFTER-FLOOD"))
    wait_for(lambda: sink.state()["delivered"] == 1, what="delivered", detail=lambda: sink.state())
    st = sink.state()
    assert st["naks"] == 0 and st["timeouts"] == 0 and st["queued"] == 0
    assert plc.frames == [b"\x02AFTER-FLOOD\x03"]


def test_acks_with_ack_mode_off_are_stray_too(pair, make_sink, plcs):
    plc = plcs(pair)
    sink = make_sink(pair.dev)
    wait_for(lambda: sink.state()["connected"], what="port open")
    flood(plc, b"\x06", 100_000).join(30)
    wait_for(lambda: sink.state()["stray_bytes"] == 100_000, what="strays counted", detail=lambda: sink.state())
    assert len(sink._acks) == 0
    sink.emit(result(2, "STILL-GOES"))
    wait_for(lambda: plc.frames == [b"\x02STILL-GOES\x03"], what="frame at the PLC")
