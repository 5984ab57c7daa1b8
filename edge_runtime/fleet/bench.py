"""Throughput of one collector: `python -m edge_runtime.fleet.bench --db URL [-n 20000]`.

Two numbers per run, both through a real mosquitto (started here on a free loopback port unless
--broker HOST:PORT is given) into the database at URL:
  drain  N results queued in the collector's session while it was stopped, then the time the
         restarted collector needs to store them all: the collector's own ceiling (what a
         collector catching up after an outage achieves)
  live   N results published by one paho publisher (QoS 1) while the collector runs, from the
         first publish until the last is stored (limited by the publisher as well)
Results are synthetic, the size of a real read (~330 bytes), spread over --devices devices.
The database gets the rows: use an empty one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt

from edge_runtime.fleet.collector import Collector
from edge_runtime.fleet.config import validate


def _payload(device: str, i: int) -> bytes:
    return json.dumps({
        "id": i, "device_id": device, "ts": "2026-12-03T08:15:12.117Z", "kind": "read", "text": f"LOT-{i:09d}",
        "format": "QRCode", "corners": [[28.0, 33.0], [59.0, 36.0], [56.0, 68.0], [25.0, 65.0]],
        "decoder": "zxing", "stage": "direct", "frame": i, "latency_ms": 8.6,
        "first_seen": "2026-12-03T08:15:12.117Z", "last_seen": "2026-12-03T08:15:12.117Z", "frames": 1,
    }, separators=(",", ":")).encode()


def _publish(host: str, port: int, prefix: str, devices: int, start: int, n: int) -> tuple[float, int]:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(host, port)
    c.loop_start()
    t0 = time.perf_counter()
    nbytes = 0
    infos = []
    for k in range(n):
        dev = f"bench-{k % devices:03d}"
        p = _payload(dev, start + k // devices)
        nbytes += len(p)
        infos.append(c.publish(f"{prefix}/{dev}/result", p, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    dt = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    return dt, nbytes


def _run_collector(cfg) -> tuple[Collector, threading.Thread]:  # noqa: ANN001
    col = Collector(cfg)
    t = threading.Thread(target=col.run, daemon=True)
    t.start()
    deadline = time.monotonic() + 20
    while col.counters["connects"] == 0:
        if time.monotonic() > deadline or not t.is_alive():
            raise SystemExit("bench: the collector did not connect")
        time.sleep(0.05)
    time.sleep(0.5)  # SUBACK
    return col, t


def _wait_stored(col: Collector, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while col.counters["stored"] + col.counters["duplicates"] < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: only {col.counters['stored']} of {n} stored after {timeout} s")
        time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge_runtime.fleet.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", required=True, metavar="URL")
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--batch-ms", type=float, default=50)
    ap.add_argument("--receive-maximum", type=int, default=1000)
    ap.add_argument("--broker", metavar="HOST:PORT", help="an existing broker (default: start a mosquitto)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    broker = None
    if args.broker:
        host, _, port_s = args.broker.rpartition(":")
        port = int(port_s)
    else:
        from edge_runtime.bench.peers import Broker

        broker = Broker(persistence=False).start()
        host, port = "127.0.0.1", broker.port
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    cfg = validate({"group": "bench", "topic_prefix": prefix, "client_id": f"bench-collector-{prefix}",
                    "broker": {"host": host, "port": port, "receive_maximum": args.receive_maximum},
                    "db": {"url": args.db, "batch_size": args.batch_size, "batch_ms": args.batch_ms}}, "bench")
    try:
        col, t = _run_collector(cfg)  # creates the session and the shared subscription
        col.stop_event.set()
        t.join(30)
        pub_s, nbytes = _publish(host, port, prefix, args.devices, 1, args.n)
        t0 = time.perf_counter()
        col, t = _run_collector(cfg)
        _wait_stored(col, args.n, 600)
        drain_s = time.perf_counter() - t0 - 0.5  # minus the SUBACK wait in _run_collector
        t0 = time.perf_counter()
        pub2_s, _ = _publish(host, port, prefix, args.devices, args.n // args.devices + 2, args.n)
        _wait_stored(col, 2 * args.n, 600)
        live_s = time.perf_counter() - t0
        col.stop_event.set()
        t.join(30)
    finally:
        if broker is not None:
            broker.stop()
    url = col.db.url if col.db is not None else args.db
    print(json.dumps({
        "db": url.split("://")[0], "n": args.n, "devices": args.devices, "bytes_per_result": round(nbytes / args.n),
        "batch_size": args.batch_size, "batch_ms": args.batch_ms, "receive_maximum": args.receive_maximum,
        "publish_per_s": round(args.n / pub_s), "drain_per_s": round(args.n / drain_s),
        "live_per_s": round(args.n / live_s), "publisher_live_per_s": round(args.n / pub2_s),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
