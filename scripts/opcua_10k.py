"""Push N results through the opcua sink to a real asyncua client subscribed to its scan events.

    .venv/bin/python scripts/opcua_10k.py [--count 10000] [--rate 500]

Prints: emitted (published by the server), events received by the client (each id once, in
order), dropped (queue full), elapsed, and the process RSS. Exit status 1 when an event is
missing, duplicated or out of order.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from asyncua import Client, ua  # noqa: E402

from edge_runtime.sinks import opcua_model as model  # noqa: E402
from edge_runtime.sinks.opcua import OpcuaSink  # noqa: E402


class Events:
    def __init__(self) -> None:
        self.ids: list[int] = []

    def event_notification(self, event) -> None:
        self.ids.append(event.ResultId)


def feed(sink: OpcuaSink, count: int, rate: float) -> None:
    """Emit like the capture loop would: paced, from another thread."""
    t0 = time.monotonic()
    for i in range(1, count + 1):
        sink.emit({"id": i, "device_id": "bench", "ts": "2026-11-25T14:54:43.276Z", "kind": "read",
                   "text": f"LOT-{i:06d}", "format": "QRCode",
                   "corners": [[10.0, 317.0], [118.0, 308.0], [127.0, 414.0], [19.0, 425.0]]})
        ahead = i / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)


async def main(count: int, rate: float) -> int:
    sink = OpcuaSink("ua", "bench", {"port": 0})
    sink.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{sink.port}/") as c:
            await c.load_data_type_definitions()
            vi = await c.get_namespace_index(model.VENDOR_URI)
            dev = await c.nodes.objects.get_child([f"{vi}:bench"])
            h = Events()
            sub = await c.create_subscription(50, h)
            await sub.subscribe_events(dev, c.get_node(ua.NodeId(model.EVENT_TYPE, vi)), queuesize=10000)
            t0 = time.monotonic()
            feeder = threading.Thread(target=feed, args=(sink, count, rate))
            feeder.start()
            while feeder.is_alive() or len(h.ids) < sink.emitted or sink.state()["queued"]:
                await asyncio.sleep(0.1)
                if time.monotonic() - t0 > count / rate + 60:
                    break
            elapsed = time.monotonic() - t0
            ok = h.ids == list(range(1, count + 1))
            rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"opcua {count} results at {rate:g}/s: emitted {sink.emitted}, events received {len(h.ids)} "
                  f"({'every id once, in order' if ok else 'MISSING/DUPLICATED/OUT OF ORDER'}), "
                  f"dropped {sink.dropped}, {elapsed:.1f} s, max RSS {rss_mb:.0f} MB")
            return 0 if ok and sink.dropped == 0 else 1
    finally:
        sink.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--rate", type=float, default=500.0, help="results per second")
    a = ap.parse_args()
    sys.exit(asyncio.run(main(a.count, a.rate)))
