"""Result sinks: one file per kind (stdout, jsonl, mqtt, serial), chosen by `kind` in config.

Every sink sees every result. A sink that must not lose results (mqtt, serial) writes
each one to its durable outbox (edge_runtime.outbox) inside `emit` before anything else,
and removes it only when the peer acknowledged it.
"""

from __future__ import annotations

import importlib

from edge_runtime.sinks.base import Sink

KINDS = {
    "stdout": "edge_runtime.sinks.stdout:StdoutSink",
    "jsonl": "edge_runtime.sinks.jsonl:JsonlSink",
    "mqtt": "edge_runtime.sinks.mqtt:MqttSink",
    "serial": "edge_runtime.sinks.serial:SerialSink",
    "opcua": "edge_runtime.sinks.opcua:OpcuaSink",
    "modbus": "edge_runtime.sinks.modbus:ModbusSink",
}


def sink_class(kind: str) -> type:
    if kind not in KINDS:
        raise ValueError(f"unknown sink kind {kind!r}; choose from {', '.join(KINDS)}")
    module, cls = KINDS[kind].split(":")
    return getattr(importlib.import_module(module), cls)


__all__ = ["Sink", "KINDS", "sink_class"]
