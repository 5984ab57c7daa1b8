"""Faults on state_dir lose no result and end no process (issue 15 items 1-3, 5).

The service runs as a user runs it (in-process for control over the fault's timing, or as
`edge-runtime run`), state_dir on a real tmpfs we fill to the last byte, sinks on a
healthy disk; every label the same run reads on a healthy disk must be delivered.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ids import fill, tmpfs
from test_service import Running, make_config, read_jsonl, wait_for

from edge_runtime.outbox import Outbox
from edge_runtime.service.ids import reserved_in

SMALL = {"width": 640, "height": 360, "labels_per_s": 4.0}
# No deadline pressure: the same frames must give the same reads in both runs.
EXTRA = "[reader]\ndeadline_ms = 5000\ndetector = \"none\"\n"


@pytest.fixture
def tiny_state(tmp_path):
    with tmpfs(tmp_path / "state") as mnt:
        yield mnt


def baseline(tmp_path: Path, frames: int) -> list[bytes]:
    """What the same source and reader deliver on a healthy disk."""
    d = tmp_path / "baseline"
    d.mkdir()
    path = make_config(d, source={**SMALL, "frames": frames}, extra=EXTRA)
    with Running(path) as run:
        wait_for(lambda: run.service.state == "stopped", timeout=120, what="baseline run")
    return [r["text"] for r in read_jsonl(d / "out.jsonl") if r["kind"] == "read"]


def test_full_state_disk_holds_results_in_order_and_delivers_them_when_it_recovers(tmp_path, tiny_state):
    filler = fill(tiny_state)  # full before the first id could ever be reserved
    path = make_config(tmp_path, source={**SMALL, "frames": 100_000}, extra=EXTRA)
    with Running(path) as run:
        svc = run.service
        wait_for(lambda: svc.status()["waiting_for_ids"] >= 5, timeout=60, what="results held for ids")
        assert read_jsonl(tmp_path / "out.jsonl") == []  # nothing goes out without a durable id
        assert svc.status()["ids_error"] and "No space left" in svc.status()["ids_error"]
        assert svc.stats.frame_errors == 0
        os.unlink(filler)
        wait_for(lambda: svc.status()["waiting_for_ids"] == 0, what="held results numbered")
        reads_then = svc.stats.reads
        wait_for(lambda: svc.stats.reads >= reads_then + 3, timeout=60, what="reads after recovery")
    frames = svc.stats.frames  # final: the loop may finish a frame between stop() and its end
    got = read_jsonl(tmp_path / "out.jsonl")
    ids = [r["id"] for r in got]
    assert ids == sorted(set(ids)) and ids[0] == 1
    assert reserved_in(str(tiny_state)) >= ids[-1]
    # Every label the reader read in those frames was delivered, none twice.
    texts = [r["text"] for r in got if r["kind"] == "read"]
    want = baseline(tmp_path, frames)
    assert texts == want


def test_state_disk_filling_up_mid_run_loses_no_label(tmp_path, tiny_state):
    """Repro: ids.py's block store raised ENOSPC, the frame failed, 13 labels never went out."""
    path = make_config(tmp_path, source={**SMALL, "frames": 100_000}, extra=EXTRA)
    with Running(path) as run:
        svc = run.service
        wait_for(lambda: svc.stats.reads >= 2, timeout=60, what="first reads")
        svc.ids.block = 2  # a reservation every other id: the full disk meets many of them
        filler = fill(tiny_state)
        reads_then = svc.stats.reads
        wait_for(lambda: svc.stats.reads >= reads_then + 12, timeout=90, what="reads on a full disk")
        os.unlink(filler)
    frames = svc.stats.frames
    assert svc.stats.frame_errors == 0
    got = read_jsonl(tmp_path / "out.jsonl")
    ids = [r["id"] for r in got]
    assert ids == sorted(set(ids))
    texts = [r["text"] for r in got if r["kind"] == "read"]
    want = baseline(tmp_path, frames)
    assert texts == want


def test_a_window_closing_while_ids_are_unavailable_does_not_end_the_service(tmp_path, tiny_state):
    filler = fill(tiny_state)
    path = make_config(tmp_path, source={**SMALL, "frames": 100_000, "realtime": True}, extra=EXTRA)
    path.write_text(path.read_text() + '[trigger]\nmode = "window"\nsource = "signal"\n')
    with Running(path) as run:
        svc = run.service
        for _ in range(3):
            svc.trigger.push(True)
            time.sleep(0.15)
            svc.trigger.push(False)
            time.sleep(0.15)
        wait_for(lambda: svc.trigger.windows == 3 and svc.trigger.window is None, what="three windows closed")
        wait_for(lambda: svc.status()["waiting_for_ids"] >= 3, what="window results held")
        assert svc.state == "running" and run.error is None
        os.unlink(filler)
        wait_for(lambda: len(read_jsonl(tmp_path / "out.jsonl")) >= 3, what="held window results delivered")
    assert run.error is None and run.code == 0
    got = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in got] == list(range(1, len(got) + 1))


def test_ids_continue_above_the_outboxes_when_the_id_file_is_missing(tmp_path):
    """Repro: `ids` removed while an outbox still holds 22001..22028 (broker away)."""
    state = tmp_path / "state"
    box = Outbox(str(state / "outbox-plant.sqlite"))
    for rid in range(22001, 22029):
        box.put(rid, json.dumps({"id": rid}).encode())
    box.close()
    assert not (state / "ids").exists()
    sinks = [
        {"kind": "jsonl", "name": "out", "path": str(tmp_path / "out.jsonl")},
        # a broker that is not there: the outbox keeps everything
        {"kind": "mqtt", "name": "plant", "host": "127.0.0.1", "port": 9, "qos": 1},
    ]
    path = make_config(tmp_path, source={**SMALL, "frames": 150}, sinks=sinks, extra=EXTRA)
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "run", "--config", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = read_jsonl(tmp_path / "out.jsonl")
    assert got and got[0]["id"] == 22029
    logs = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    floor = [x for x in logs if x.get("event") == "ids_floor"]
    assert len(floor) == 1 and "outbox-plant.sqlite holds id 22028" in floor[0]["msg"]
    assert "Traceback" not in proc.stderr + proc.stdout
    again = Outbox(str(state / "outbox-plant.sqlite"))
    queued = [rid for rid, _ in again.peek(limit=10_000)]
    again.close()
    assert queued == list(range(22001, 22029)) + [r["id"] for r in got]  # every new result queued too


def test_a_trigger_flood_costs_one_window_per_frame_and_frames_keep_flowing(tmp_path):
    """Repro: 103,800 LON/LOFF pairs produced 103,800 noreads in one pass, no frame for 143 s."""
    # An empty belt: every window closes with nothing read, so each owes exactly one noread.
    path = make_config(tmp_path, source={**SMALL, "frames": 100_000, "realtime": True, "labels_per_s": 0},
                       extra=EXTRA)
    path.write_text(path.read_text() + '[trigger]\nmode = "window"\nsource = "signal"\n')
    with Running(path) as run:
        svc = run.service
        wait_for(lambda: svc.stats.frames >= 5, what="frames")
        for _ in range(100_000):
            svc.trigger.push(True)
            svc.trigger.push(False)
        frames_then = svc.stats.frames
        # realtime at 30 fps: 30 more frames is one second of a loop that keeps reading
        wait_for(lambda: svc.stats.frames >= frames_then + 30, timeout=15, what="frames during the flood")
        wait_for(lambda: svc.trigger._events.qsize() == 0 and svc.trigger.window is None,
                 timeout=60, what="the flood applied")
        frames = svc.stats.frames
        windows = svc.trigger.windows
        coalesced = svc.trigger.state()["coalesced"]
    assert windows <= frames + 2  # at most one window per frame
    assert windows + coalesced // 2 >= 100_000 - 2  # every pair is a window or was folded into one
    got = read_jsonl(tmp_path / "out.jsonl")
    assert len(got) == windows and {r["kind"] for r in got} == {"noread"}  # one per window, none lost
