"""`edge-runtime bench soak`, short: the whole service against a real mosquitto and a pty PLC
while the broker restarts, the serial adapter is unplugged, the camera stalls, the outbox
and state disks fill up, file descriptors run out, triggers flood in and /metrics is held
by idle connections; then every produced id is audited at every sink and every label of
the conveyor against its result.

The 100,000-frame run is in docs/reliability.md; CI runs 1,500 frames (about 15 s here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edge_runtime.bench.soak import FAULTS, _align_plc, account, run_soak

ROOT = Path(__file__).resolve().parents[1]


def test_short_soak_with_every_fault_loses_nothing_silently(tmp_path):
    r = run_soak(1500, seed=1, faults=True, workdir=str(tmp_path / "work"))
    assert sorted({f["kind"] for f in r["faults"]}) == sorted(FAULTS)
    assert r["frames"] == 1500 and r["results"] >= 50
    assert r["ids_increasing"]
    for name, s in r["sinks"].items():
        assert s["unexplained"] == 0, (name, s)
        # Faults are over before the end and the sinks drained: nothing left behind.
        assert s["queued"] == 0, (name, s)
        # A loss is only ever a counted one: emits refused while the disk was full.
        assert s["missing"] <= s["emit_failed"] + s["dropped"], (name, s)
        assert s["delivered"] + s["missing"] == r["results"], (name, s)
    assert r["mqtt_foreign_topics"] == [] and r["mqtt_malformed"] == 0
    assert r["plc_garbage_bytes"] == 0 and r["sinks"]["serial"]["unmatched_frames"] == 0
    assert r["plc_reopens"] >= 2  # the PLC saw the adapter vanish and come back
    assert r["rss_mb"]["end"] > 0 and r["frames_per_s"] > 0
    # Every label of the conveyor has exactly one result, whatever the faults did to state_dir.
    lab = r["labels"]
    assert lab["labels"] >= 50 and lab["silent_misses"] == 0 and lab["duplicates"] == 0, lab
    assert lab["false_reads"] == 0 and lab["reads"] + lab["noreads"] == lab["labels"], lab
    faults = {f["kind"]: f for f in r["faults"]}
    assert faults["idle_metrics"]["scrape_ok"] and faults["idle_metrics"]["connections"] == 500
    assert faults["fd_exhaustion"]["fds_taken"] > 0 and faults["trigger_flood"]["pairs"] == 100_000
    assert r["max_frame_gap_s"] <= 10.0
    assert r["ok"] is True
    # What the operator reads afterwards is there: the report and the service's own log.
    assert json.loads((tmp_path / "work" / "report.json").read_text())["ok"] is True
    assert r["log"]["error"] >= 1  # the faults were logged, not swallowed


def test_cli_without_faults_delivers_every_result_once_and_exits_0(tmp_path):
    out = tmp_path / "report.json"
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "soak", "--frames", "300", "--faults", "off",
                        "--seed", "2", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "frames/s" in p.stdout and "verdict: OK" in p.stdout
    r = json.loads(out.read_text())
    assert r["faults"] == [] and r["results"] > 0
    for s in r["sinks"].values():
        # No faults: exactly once, nothing queued, nothing lost, no duplicates.
        assert (s["delivered"], s["missing"], s["duplicates"], s["queued"]) == (r["results"], 0, 0, 0)


def test_cli_rejects_zero_frames_in_one_line():
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", "soak", "--frames", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip() == "edge-runtime: error: --frames must be at least 1"


def test_books_catch_a_silent_loss():
    produced = set(range(1, 11))
    ok = account(produced, delivered=set(range(1, 8)), queued={8, 9}, failed={10}, offered=produced, dropped=0)
    assert ok["unexplained"] == 0 and ok["missing"] == 1
    silent = account(produced, delivered=set(range(1, 8)), queued={8}, failed=set(), offered=produced, dropped=0)
    assert silent["unexplained"] == 2 and silent["unexplained_ids"] == [9, 10]
    # Policy drops are counted without ids: they explain as many missing ids, no more.
    assert account(produced, set(range(1, 9)), set(), set(), produced, dropped=1)["unexplained"] == 1
    assert account(produced, set(range(1, 9)), set(), set(), produced, dropped=2)["unexplained"] == 0


def test_plc_alignment_counts_resends_and_skips_losses():
    ledger = [{"id": i, "text": f"LOT-{i:06d}"} for i in (5, 6, 7, 9, 10)]
    frames = [b"LOT-000005", b"LOT-000005", b"LOT-000006,LOT-000007", b"LOT-000010", b"LOT-000006", b"garbage"]
    delivered, dups, unmatched = _align_plc(ledger, frames)
    assert delivered == {5, 6, 7, 10}  # 9 never arrived
    assert dups == 2 and unmatched == 1


def test_a_sink_refusing_one_result_still_gets_the_rest_of_the_frame(tmp_path):
    """Two labels first read in the same frame reach the sinks as one batch. A sink that
    refuses the first (its disk was full for a moment) must still be offered the second,
    and each lost result must be counted: the soak's books depend on it ("not_offered")."""
    from edge_runtime import config as config_mod
    from edge_runtime.service.loop import Service

    cfg = tmp_path / "c.toml"
    cfg.write_text(f'state_dir = "{tmp_path / "s"}"\n[source]\nkind = "synthetic"\n[[sinks]]\nkind = "stdout"\n')
    svc = Service(config_mod.load(str(cfg)))

    class FlakySink:
        kind, name = "jsonl", "flaky"

        def __init__(self) -> None:
            self.got: list[int] = []
            self.calls = 0

        def emit(self, r: dict) -> None:
            self.calls += 1
            if self.calls == 1:
                raise OSError(28, "No space left on device")
            self.got.append(r["id"])

        def state(self) -> dict:
            return {}

    sink = FlakySink()
    svc.sinks = [sink]
    svc._emit([{"id": 1}, {"id": 2}, {"id": 3}])
    assert sink.got == [2, 3], "results after a refused one in the same frame were never offered"
    assert svc.stats.sink_errors["flaky"] == 1 and svc.stats.sink_emitted["flaky"] == 2
