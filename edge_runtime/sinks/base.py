"""The contract every sink keeps with the service.

A result is a dict following schema/result.schema.json: id (strictly increasing per
device, never reused), device_id, ts, kind (read|noread), text, bytes_b64 (when the
payload is not UTF-8), format, corners, decoder, stage, frame, latency_ms, plus the
tracker's first_seen / last_seen / frames.
"""

from __future__ import annotations

from typing import Protocol


class Sink(Protocol):
    kind: str
    name: str  # unique per configured sink, e.g. "mqtt0"; used in counters and status

    def start(self) -> None:
        """Open connections/threads. Must not raise for a peer that is merely down:
        durable sinks keep queueing and reconnect with backoff."""

    def emit(self, result: dict) -> None:
        """Accept one result. Returns quickly (never blocks the capture loop on the peer);
        durable sinks have written it to their outbox before returning."""

    def state(self) -> dict:
        """Counters and connection state: {"connected", "queued", "delivered", "dropped", ...}."""

    def close(self, timeout: float = 5.0) -> None:
        """Try to deliver what is queued within `timeout`, then stop; queued results stay
        in the outbox for the next start."""
