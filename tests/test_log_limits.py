"""Log floods: one noisy peer must not drown the journal (journald drops lines past 10,000 per
30 s, the real ones with them), and one huge payload must not become one huge line.

Everything goes through `logs.setup`, the handler the service installs, writing to a buffer.
"""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from edge_runtime.service import logs
from edge_runtime.service.trigger import Trigger


@pytest.fixture
def out():
    """The package handler writing into a StringIO; removed again so other tests are untouched."""
    root = logging.getLogger()
    level = root.level
    buf = io.StringIO()
    handlers: list[logging.Handler] = []

    def install(fmt: str = "json", **kw) -> io.StringIO:
        handlers.append(logs.setup("info", fmt, buf, **kw))
        return buf

    yield install
    for h in handlers:
        root.removeHandler(h)
    root.setLevel(level)


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(x) for x in buf.getvalue().splitlines()]


def test_ten_thousand_identical_warnings_are_a_few_lines_and_a_count(out):
    buf = out()
    log = logging.getLogger("edge_runtime.test.flood")
    for i in range(10_000):
        log.warning("peer %s sent garbage %d", "plc", i)
    assert len(lines(buf)) == logs.REPEAT_BURST
    logs.flush_suppressed()  # what a window that ends without any further line gets at shutdown
    got = lines(buf)
    assert len(got) <= 10
    assert got[-1]["suppressed"] == 10_000 - logs.REPEAT_BURST and got[-1]["level"] == "warning"
    assert "similar messages suppressed" in got[-1]["msg"] and "garbage 9999" in got[-1]["msg"]


def test_count_is_written_when_the_window_has_passed_and_logging_resumes(out):
    buf = out(repeat_window_s=0.5)
    log = logging.getLogger("edge_runtime.test.window")
    for _ in range(1000):
        log.warning("same thing")
    time.sleep(0.6)
    log.warning("same thing")  # a new window: the count first, then this line
    got = lines(buf)
    assert [g.get("suppressed") for g in got] == [None] * 5 + [995, None], got
    assert got[-1]["msg"] == "same thing"


def test_a_flood_does_not_hide_other_messages(out):
    buf = out()
    noisy, sink = logging.getLogger("edge_runtime.test.noisy"), logging.getLogger("edge_runtime.test.sink")
    for i in range(5000):
        noisy.warning("ignored %d", i)
        if i == 2500:
            sink.error("mqtt broker %s connection lost", "10.0.0.5:1883")
            noisy.error("ignored %d", i)  # same template, other level: its own budget
    msgs = [g["msg"] for g in lines(buf)]
    assert "mqtt broker 10.0.0.5:1883 connection lost" in msgs and "ignored 2500" in msgs
    assert len(msgs) == 7


def test_ignored_trigger_commands_are_rate_limited(out):
    """The flood from the issue: 10,000 refused triggers (different payloads each time) gave
    10,002 warning lines."""
    buf = out()
    t = Trigger("window", source="serial")
    for i in range(10_000):
        t.on_mqtt({"cmd": "trigger", "state": f"bogus-{i}"})   # not a state
        t.on_mqtt({"cmd": "LON"})                              # source is serial, not mqtt
    logs.flush_suppressed()
    got = lines(buf)
    assert len(got) <= 12, len(got)
    assert sum(g.get("suppressed", 0) for g in got) == 2 * (10_000 - logs.REPEAT_BURST)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_huge_field_and_message_are_clipped_with_their_length(out, fmt):
    buf = out(fmt)
    log = logging.getLogger("edge_runtime.test.big")
    log.warning("code read", extra={"fields": {"text": "A" * 60_000, "id": 7}})
    log.warning("refused payload %s", "B" * 60_000)
    log.warning("corners", extra={"fields": {"corners": list(range(20_000))}})  # not a string: its JSON is clipped
    log.info("hello %s", "x" * 100, extra={"fields": {"n": 3, "s": "ok"}})       # short ones stay as they are
    got = buf.getvalue().splitlines()
    assert len(got) == 4
    assert got[3].endswith("hello " + "x" * 100 + ('", "n": 3, "s": "ok"}' if fmt == "json" else " n=3 s=ok"))
    got = got[:3]
    assert all(len(x) < 2_200 for x in got), [len(x) for x in got]
    if fmt == "json":
        field, msg, corners = (json.loads(x) for x in got)
        assert field["text"] == "A" * logs.MAX_CHARS + "…(60000 chars)" and field["id"] == 7
        assert msg["msg"].startswith("refused payload BBB") and msg["msg"].endswith("…(60016 chars)")
        assert corners["corners"].startswith("[0, 1, 2") and corners["corners"].endswith(" chars)")
    else:
        assert "(60000 chars)" in got[0] and "(60016 chars)" in got[1] and got[2].endswith(" chars)")
