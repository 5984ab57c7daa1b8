"""`edge-runtime run` with a PLC on a real pseudo-terminal pair: LON/LOFF gating, NOREAD."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from pty_pair import SocatPair, read_until

ROOT = Path(__file__).resolve().parent.parent


def write_config(tmp_path: Path, dev: str, source: str, mode: str = "single") -> Path:
    p = tmp_path / "config.toml"
    p.write_text(f"""
device_id = "serial-e2e"
state_dir = "{tmp_path / 'state'}"

[source]
{source}

[trigger]
mode = "{mode}"
source = "serial"

[[sinks]]
kind = "jsonl"
name = "ref"
path = "{tmp_path / 'ref.jsonl'}"

[[sinks]]
kind = "serial"
name = "plc"
port = "{dev}"
baudrate = 115200
prefix = ""
suffix = "\\r\\n"
""")
    return p


class Runtime:
    """`python -m edge_runtime run` with its JSON log lines collected from stdout."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(config)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def wait_log(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line with {text!r}: {''.join(self.lines)[-2000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)


def frames_in(data: bytes) -> list[bytes]:
    return [f for f in data.split(b"\r\n") if f]


def quiet_for(fd: int, seconds: float) -> bytes:
    """What the PLC receives within `seconds` (expected: nothing)."""
    got = b""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        r, _, _ = select.select([fd], [], [], left)
        if r:
            got += os.read(fd, 4096)
    return got


def ref(tmp_path: Path) -> list[dict]:
    f = tmp_path / "ref.jsonl"
    return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []


def test_lon_loff_gate_reading_and_single_mode_sends_one_code_per_window(tmp_path):
    pair = SocatPair(tmp_path / "pty").start()
    src = 'kind = "synthetic"\nrealtime = true\ndegradations = false\nlabels_per_s = 3.0'
    rt = Runtime(write_config(tmp_path, pair.dev, src))
    plc = None
    try:
        rt.wait_log(f"serial port {pair.dev} open")
        plc = pair.open_plc()
        # Trigger off: codes pass under the camera, the PLC gets nothing.
        assert quiet_for(plc, 1.5) == b""
        for _ in range(2):
            os.write(plc, b"LON\r\n")
            got = read_until(plc, lambda d: b"\r\n" in d, timeout=30)
            # Window still open for a while: single mode sends nothing more.
            got += quiet_for(plc, 1.5)
            os.write(plc, b"LOFF\r\n")
            got += quiet_for(plc, 0.5)  # a window with a read owes no NOREAD
            (frame,) = frames_in(got)
            assert frame.startswith(b"LOT-") and len(frame) == 10, got
    finally:
        code = rt.stop()
        if plc is not None:
            os.close(plc)
        pair.stop()
    assert code == 0, "".join(rt.lines)[-2000:]
    results = ref(tmp_path)
    assert [r["kind"] for r in results] == ["read", "read"]
    assert results[0]["id"] < results[1]["id"]


def test_window_closing_with_nothing_read_sends_noread(tmp_path):
    # A camera looking at an empty belt: a folder with one blank frame, looped at 30 fps.
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "blank.png"), np.full((480, 640), 90, np.uint8))
    pair = SocatPair(tmp_path / "pty").start()
    src = f'kind = "folder"\npath = "{folder}"\nloop = true\nfps = 30.0'
    rt = Runtime(write_config(tmp_path, pair.dev, src))
    plc = None
    try:
        rt.wait_log(f"serial port {pair.dev} open")
        plc = pair.open_plc()
        os.write(plc, b"LON\r\n")
        assert quiet_for(plc, 1.0) == b""  # nothing yet: the answer comes when the window closes
        os.write(plc, b"LOFF\r\n")
        got = read_until(plc, lambda d: b"\r\n" in d, timeout=30)
        assert frames_in(got) == [b"NOREAD"]
        # PLCs resend: a second LOFF on a closed window is not a second NOREAD.
        os.write(plc, b"LOFF\r\n")
        assert quiet_for(plc, 1.0) == b""
    finally:
        code = rt.stop()
        if plc is not None:
            os.close(plc)
        pair.stop()
    assert code == 0
    (noread,) = ref(tmp_path)
    assert noread["kind"] == "noread" and noread["text"] is None and noread["frames"] >= 3
