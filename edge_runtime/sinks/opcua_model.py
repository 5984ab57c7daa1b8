"""The OPC UA address space of the opcua sink: the part of OPC 30010 "AutoID" it implements.

Built node by node with asyncua instead of importing Opc.Ua.AutoID.NodeSet2.xml: the
nodeset needs the DI nodeset too, and both would have to ship with the package; we use a
handful of its nodes. Types, data types and event types are created in the AutoID namespace
(http://opcfoundation.org/UA/AutoID/) with the specification's numeric ids and browse names,
so a client written for AutoID readers finds them by browse name or by id. What is ours
(the full result as JSON, the four corners, counters) lives in the device's own namespace
(VENDOR_URI), on a subtype, so it never collides with the specification.

See README.md, "OPC UA (AutoID)", for the node layout and what is simplified.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from asyncua import Server, ua
from asyncua.common.node import Node
from asyncua.common.structures104 import new_enum, new_struct, new_struct_field

AUTOID_URI = "http://opcfoundation.org/UA/AutoID/"
VENDOR_URI = "urn:edge-runtime:opcua"
AUTOID_MODEL_VERSION = "1.00"  # the AutoIdModelVersion property: the nodeset release we follow

# Numeric ids of Opc.Ua.AutoID.NodeSet2.xml (namespace AUTOID_URI).
ID_AUTOID_DEVICE_TYPE = 1001
ID_AUTOID_SCAN_EVENT_TYPE = 1004
ID_OPTICAL_READER_DEVICE_TYPE = 1008
ID_OPTICAL_SCAN_EVENT_TYPE = 1009
ID_DEVICE_STATUS_ENUM = 3003
ID_POSITION = 3004
ID_SCAN_SETTINGS = 3010
ID_AUTOID_OPERATION_STATUS_ENUM = 3013
ID_SCAN_DATA = 3020
ID_OPTICAL_SCAN_RESULT = 3026

# DeviceStatusEnumeration
IDLE, ERROR, SCANNING, BUSY = 0, 1, 2, 3
# AutoIdOperationStatusEnumeration: the values the scan methods return
SUCCESS, NO_IDENTIFIER, DEVICE_NOT_READY = 0, 8, 17
_OPERATION_STATUS = [
    "SUCCESS", "MISC_ERROR_TOTAL", "MISC_ERROR_PARTIAL", "PERMISSON_ERROR", "PASSWORD_ERROR",
    "REGION_NOT_FOUND_ERROR", "OP_NOT_POSSIBLE_ERROR", "OUT_OF_RANGE_ERROR", "NO_IDENTIFIER",
    "MULTIPLE_IDENTIFIERS", "READ_ERROR", "DECODING_ERROR", "MATCH_ERROR", "CODE_NOT_SUPPORTED",
    "WRITE_ERROR", "NOT_SUPPORTED_BY_DEVICE", "NOT_SUPPORTED_BY_TAG", "DEVICE_NOT_READY",
    "INVALID_CONFIGURATION", "RF_COMMUNICATION_ERROR", "DEVICE_FAULT", "TAG_HAS_LOW_BATTERY",
]
EVENT_TYPE = "EdgeRuntimeScanEventType"  # our concrete scan event (string id in VENDOR_URI)
NOT_GRADED = -1.0  # OpticalScanResult.Grade of a read without a quality grade

# Counters published under the device's Counters object: (browse name, where in the status).
SERVICE_COUNTERS = ("frames", "reads", "codes", "noreads", "frame_errors", "source_errors")
GRADES = ("A", "B", "C", "D", "F")
QUALITY_COUNTERS = (*(f"grade_{g}" for g in GRADES), "ungraded")  # reads seen by this sink, by grade
SINK_COUNTERS = ("emitted", "events", "dropped", "clients", "scan_calls", "bad_requests", *QUALITY_COUNTERS)


@dataclass
class DeviceNodes:
    """The nodes the sink writes to or answers on."""

    autoid_idx: int
    vendor_idx: int
    device: Node
    device_status: Node
    last_scan_data: Node
    last_scan_timestamp: Node
    last_result_json: Node
    event_type: Node
    counters: dict[str, Node]
    scan: Node
    scan_start: Node
    scan_stop: Node


async def build(server: Server, device_id: str, device_name: str, handlers: dict) -> DeviceNodes:
    """Create the AutoID types and one OpticalReaderDeviceType instance named after the device.

    `handlers` maps "Scan", "ScanStart", "ScanStop" to asyncua method callbacks."""
    ai = await server.register_namespace(AUTOID_URI)
    vi = await server.register_namespace(VENDOR_URI)

    def aid(i: int) -> ua.NodeId:
        return ua.NodeId(i, ai)

    await new_enum(server, aid(ID_DEVICE_STATUS_ENUM), ua.QualifiedName("DeviceStatusEnumeration", ai),
                   ["Idle", "Error", "Scanning", "Busy"])
    await new_enum(server, aid(ID_AUTOID_OPERATION_STATUS_ENUM),
                   ua.QualifiedName("AutoIdOperationStatusEnumeration", ai), list(_OPERATION_STATUS))
    i32, f64 = ua.VariantType.Int32, ua.VariantType.Double
    position, _ = await new_struct(server, aid(ID_POSITION), ua.QualifiedName("Position", ai), [
        new_struct_field(n, i32) for n in ("PositionX", "PositionY", "SizeX", "SizeY", "Rotation")])
    scan_data, _ = await new_struct(server, aid(ID_SCAN_DATA), ua.QualifiedName("ScanData", ai), [
        new_struct_field("ByteString", ua.VariantType.ByteString),
        new_struct_field("String", ua.VariantType.String),
    ], is_union=True)
    await new_struct(server, aid(ID_SCAN_SETTINGS), ua.QualifiedName("ScanSettings", ai), [
        new_struct_field("Duration", f64),
        new_struct_field("Cycles", i32),
        new_struct_field("DataAvailable", ua.VariantType.Boolean),
    ])
    result_t, _ = await new_struct(server, aid(ID_OPTICAL_SCAN_RESULT), ua.QualifiedName("OpticalScanResult", ai), [
        new_struct_field("CodeType", ua.VariantType.String),
        new_struct_field("ScanData", scan_data),
        new_struct_field("Timestamp", ua.VariantType.DateTime),
        new_struct_field("Grade", ua.VariantType.Float),
        new_struct_field("Position", position),
        new_struct_field("Symbology", ua.VariantType.String),
    ])
    await server.load_data_type_definitions()

    # Object types: AutoIdDeviceType (abstract) > OpticalReaderDeviceType. Without the DI
    # nodeset the base is BaseObjectType instead of DI's DeviceType.
    base_obj = server.get_node(ua.ObjectIds.BaseObjectType)
    autoid_dev_t = await base_obj.add_object_type(aid(ID_AUTOID_DEVICE_TYPE), ua.QualifiedName("AutoIdDeviceType", ai))
    await autoid_dev_t.write_attribute(ua.AttributeIds.IsAbstract, ua.DataValue(True))
    optical_t = await autoid_dev_t.add_object_type(aid(ID_OPTICAL_READER_DEVICE_TYPE),
                                                   ua.QualifiedName("OpticalReaderDeviceType", ai))

    # Event types: AutoIdScanEventType (abstract) > OpticalScanEventType (abstract) > ours.
    base_ev = server.get_node(ua.ObjectIds.BaseEventType)
    scan_ev_t = await base_ev.add_object_type(aid(ID_AUTOID_SCAN_EVENT_TYPE), ua.QualifiedName("AutoIdScanEventType", ai))
    await scan_ev_t.add_property(ai, "DeviceName", "", varianttype=ua.VariantType.String)
    await scan_ev_t.write_attribute(ua.AttributeIds.IsAbstract, ua.DataValue(True))
    optical_ev_t = await scan_ev_t.add_object_type(aid(ID_OPTICAL_SCAN_EVENT_TYPE),
                                                   ua.QualifiedName("OpticalScanEventType", ai))
    sr = await optical_ev_t.add_property(ai, "ScanResult", ua.Variant([], ua.VariantType.ExtensionObject),
                                         datatype=result_t.nodeid)
    await sr.write_value_rank(ua.ValueRank.OneDimension)
    await optical_ev_t.write_attribute(ua.AttributeIds.IsAbstract, ua.DataValue(True))
    # Concrete subtype in our namespace: a client filtering on OpticalScanEventType gets it,
    # and one that knows us also gets the corners, the id and the whole result.
    ev_t = await optical_ev_t.add_object_type(ua.NodeId(EVENT_TYPE, vi), ua.QualifiedName(EVENT_TYPE, vi))
    await ev_t.add_property(vi, "ResultId", ua.Variant(0, ua.VariantType.UInt64))
    await ev_t.add_property(vi, "ResultKind", "", varianttype=ua.VariantType.String)
    await ev_t.add_property(vi, "Corners", ua.Variant([], ua.VariantType.Double))
    await ev_t.add_property(vi, "ResultJson", "", varianttype=ua.VariantType.String)

    # The device instance. Its browse name is the device_id (instance names are ours to
    # choose); its children carry the specification's browse names.
    objects = server.nodes.objects
    dev = await objects.add_object(ua.NodeId(f"{device_id}", vi), ua.QualifiedName(device_id, vi), optical_t.nodeid)
    await dev.write_attribute(ua.AttributeIds.EventNotifier, ua.DataValue(ua.Byte(1)))  # SubscribeToEvents
    await server.nodes.server.add_reference(dev.nodeid, ua.ObjectIds.HasNotifier)

    def node_id(name: str) -> ua.NodeId:
        return ua.NodeId(f"{device_id}.{name}", vi)

    await dev.add_property(node_id("AutoIdModelVersion"), ua.QualifiedName("AutoIdModelVersion", ai),
                           AUTOID_MODEL_VERSION, varianttype=ua.VariantType.String)
    await dev.add_property(node_id("DeviceName"), ua.QualifiedName("DeviceName", ai), device_name,
                           varianttype=ua.VariantType.String)
    status = await dev.add_variable(node_id("DeviceStatus"), ua.QualifiedName("DeviceStatus", ai),
                                    ua.Variant(IDLE, ua.VariantType.Int32), datatype=aid(ID_DEVICE_STATUS_ENUM))
    last = await dev.add_variable(node_id("LastScanData"), ua.QualifiedName("LastScanData", ai),
                                  ua.Variant(None, ua.VariantType.Null), datatype=ua.NodeId(ua.ObjectIds.BaseDataType))
    last_ts = await dev.add_variable(node_id("LastScanTimestamp"), ua.QualifiedName("LastScanTimestamp", ai),
                                     ua.Variant(None, ua.VariantType.DateTime), datatype=ua.NodeId(ua.ObjectIds.UtcTime))
    last_json = await dev.add_variable(node_id("LastScanResultJson"), ua.QualifiedName("LastScanResultJson", vi),
                                       "", varianttype=ua.VariantType.String)
    counters_obj = await dev.add_object(node_id("Counters"), ua.QualifiedName("Counters", vi))
    counters = {}
    for name in (*SERVICE_COUNTERS, *SINK_COUNTERS):
        counters[name] = await counters_obj.add_variable(
            node_id(f"Counters.{name}"), ua.QualifiedName(name, vi), ua.Variant(0, ua.VariantType.UInt64))

    settings_arg = _argument("Settings", aid(ID_SCAN_SETTINGS), -1, "Duration in ms (0: the sink's scan_timeout_ms); "
                             "DataAvailable: return at the first result")
    status_arg = _argument("Status", aid(ID_AUTOID_OPERATION_STATUS_ENUM), -1, "AutoIdOperationStatusEnumeration")
    results_arg = _argument("Results", result_t.nodeid, 1, "the codes read during the scan")
    scan = await dev.add_method(node_id("Scan"), ua.QualifiedName("Scan", ai), handlers["Scan"],
                                [settings_arg], [results_arg, status_arg])
    scan_start = await dev.add_method(node_id("ScanStart"), ua.QualifiedName("ScanStart", ai), handlers["ScanStart"],
                                      [settings_arg], [status_arg])
    scan_stop = await dev.add_method(node_id("ScanStop"), ua.QualifiedName("ScanStop", ai), handlers["ScanStop"], [], [])
    return DeviceNodes(ai, vi, dev, status, last, last_ts, last_json, ev_t, counters, scan, scan_start, scan_stop)


def _argument(name: str, datatype: ua.NodeId, value_rank: int, description: str) -> ua.Argument:
    arg = ua.Argument()
    arg.Name = name
    arg.DataType = datatype
    arg.ValueRank = value_rank
    arg.ArrayDimensions = [0] if value_rank == 1 else []
    arg.Description = ua.LocalizedText(description)
    return arg


# -- results -> AutoID values ---------------------------------------------------------------------

def parse_ts(value: Any) -> datetime:
    """The result's ISO timestamp ("2026-11-25T14:54:43.276Z") as an aware UTC datetime."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(timezone.utc)
        except ValueError:
            pass
    return datetime.now(timezone.utc)


def scan_data(result: dict) -> Any:
    """ScanData union: String for UTF-8 payloads, ByteString when the exact bytes differ."""
    import base64

    value = ua.ScanData()
    raw = result.get("bytes_b64")
    if raw:
        value.ByteString = base64.b64decode(raw)
    else:
        value.String = result.get("text") or ""
    return value


def position(corners: Any) -> Any:
    """AutoID Position from the four corners: centre, side lengths, rotation of the top edge
    in whole degrees (the structure has integers only; the exact corners are in Corners)."""
    pos = ua.Position()
    try:
        pts = [(float(x), float(y)) for x, y in corners][:4]
    except (TypeError, ValueError):
        return pos
    if len(pts) != 4 or not all(math.isfinite(c) for p in pts for c in p):
        return pos
    (x0, y0), (x1, y1), _, (x3, y3) = pts
    pos.PositionX = _i32(sum(p[0] for p in pts) / 4)
    pos.PositionY = _i32(sum(p[1] for p in pts) / 4)
    pos.SizeX = _i32(math.hypot(x1 - x0, y1 - y0))
    pos.SizeY = _i32(math.hypot(x3 - x0, y3 - y0))
    pos.Rotation = _i32(math.degrees(math.atan2(y1 - y0, x1 - x0)) % 360)
    return pos


def _i32(v: float) -> int:
    return max(-(2**31), min(2**31 - 1, round(v)))


def optical_scan_result(result: dict) -> Any:
    """OpticalScanResult of one read (noreads have none: the event's ScanResult is empty)."""
    r = ua.OpticalScanResult()
    r.CodeType = "RAW:BYTES" if result.get("bytes_b64") else "RAW:STRING"
    r.ScanData = scan_data(result)
    r.Timestamp = parse_ts(result.get("ts"))
    r.Grade = grade_score(result)
    r.Position = position(result.get("corners") or [])
    r.Symbology = str(result.get("format") or "")
    return r


def grade_score(result: dict) -> float:
    """The print-quality score 0..4 (ISO 15415 style, `quality.score`), or NOT_GRADED."""
    q = result.get("quality")
    score = q.get("score") if isinstance(q, dict) else None
    if isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score):
        return float(score)
    return NOT_GRADED


def grade_letter(result: dict) -> str:
    """The counter a read adds to: grade_A .. grade_F, or ungraded."""
    q = result.get("quality")
    letter = q.get("grade") if isinstance(q, dict) else None
    return f"grade_{letter}" if letter in GRADES else "ungraded"


def flat_corners(result: dict) -> list[float]:
    try:
        return [float(c) for p in (result.get("corners") or []) for c in p]
    except (TypeError, ValueError):
        return []


def to_json(result: dict) -> str:
    return json.dumps(result, ensure_ascii=False, separators=(",", ":"), default=str)
