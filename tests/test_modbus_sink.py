"""Modbus TCP sink against a real pymodbus client on loopback playing the PLC: the counter/ACK
handshake, reconnects, restarts, bad requests, connection cap, hung clients, the real service."""

from __future__ import annotations

import base64
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from edge_runtime.sinks.modbus import (
    BIT_NOREAD,
    BIT_PRESENT,
    BIT_TRUNCATED,
    BIT_WINDOW,
    REG_ACK,
    REG_PAYLOAD,
    ModbusSink,
    validate_options,
)

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Plc:
    """A PLC program: poll the map; when a result is present, copy it and write its counter
    back to the ACK register."""

    def __init__(self, port: int, payload_registers: int = 64, unit: int = 1) -> None:
        self.n = payload_registers
        self.unit = unit
        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
        assert self.client.connect(), f"PLC cannot connect to port {port}"

    def read(self) -> dict | None:
        regs: list[int] = []
        while len(regs) < REG_PAYLOAD + self.n:  # a PLC reads at most 125 registers at a time
            count = min(125, REG_PAYLOAD + self.n - len(regs))
            rr = self.client.read_holding_registers(len(regs), count=count, device_id=self.unit)
            assert not rr.isError(), rr
            regs += rr.registers
        status = regs[0]
        if not status & BIT_PRESENT:
            return None
        length = regs[6]
        raw = b"".join(struct.pack(">H", r) for r in regs[REG_PAYLOAD:])
        return {
            "status": status,
            "counter": regs[1],
            "id": struct.unpack(">Q", struct.pack(">4H", *regs[2:6]))[0],
            "length": length,
            "payload": raw[:length],
            "padding": raw[length:],
            "quality": regs[7],
            "queued": regs[9],
        }

    def ack(self, counter: int) -> None:
        rr = self.client.write_register(REG_ACK, counter, device_id=self.unit)
        assert not rr.isError(), rr

    def take(self, count: int, timeout: float = 60.0) -> list[dict]:
        """Read and acknowledge `count` results through the handshake."""
        got: list[dict] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} results within {timeout} s"
            r = self.read()
            if r is None:
                time.sleep(0.01)
                continue
            got.append(r)
            self.ack(r["counter"])
        return got

    def close(self) -> None:
        self.client.close()


def make_sink(tmp_path: Path, port: int, **opts) -> ModbusSink:
    s = ModbusSink("plc", "dev1", {"port": port, "outbox": str(tmp_path / "outbox-plc.sqlite"), **opts})
    s.start()
    return s


def result(i: int, text: str | None = None, raw: bytes | None = None, noread: bool = False) -> dict:
    if noread:
        return {"id": i, "kind": "noread", "text": None}
    if raw is not None:
        return {"id": i, "kind": "read", "text": None, "bytes_b64": base64.b64encode(raw).decode()}
    return {"id": i, "kind": "read", "text": text if text is not None else f"LABEL-{i:06d}"}


def test_handshake_presents_each_result_until_acked_in_order_with_exact_bytes(tmp_path: Path) -> None:
    port = free_port()
    sink = make_sink(tmp_path, port, payload_registers=8)
    plc = Plc(port, payload_registers=8)
    try:
        empty = plc.client.read_holding_registers(0, count=10, device_id=1).registers
        assert empty[0] & BIT_PRESENT == 0 and empty[1] == 0 and empty[7] == 0xFFFF
        sent = [
            result(5, "ABC"),
            result(6, "Grüße ✓"),  # non-ASCII UTF-8: 11 bytes
            result(9, raw=b"\x00\xff\xfe\x02\x03 raw"),  # not UTF-8: the raw bytes
            result(10, noread=True),
            result(12, "0123456789abcdefXYZ"),  # 19 bytes > 16: truncated
            result(2**40 + 3, "big id"),
        ]
        for r in sent:
            sink.emit(r)
        first = plc.read()
        assert plc.read() == first, "a result must stay presented until it is acknowledged"
        assert first["queued"] == len(sent)
        plc.ack(first["counter"] + 1)  # a wrong counter is ignored
        assert plc.read() == first
        plc.ack(first["counter"])
        got = [first] + plc.take(len(sent) - 1)
        assert [g["id"] for g in got] == [r["id"] for r in sent]
        assert [g["counter"] for g in got] == [1, 2, 3, 4, 5, 6]
        assert got[0]["payload"] == b"ABC" and got[0]["length"] == 3
        assert got[1]["payload"] == "Grüße ✓".encode() and got[1]["length"] == 11
        assert got[2]["payload"] == b"\x00\xff\xfe\x02\x03 raw"
        assert got[3]["status"] & BIT_NOREAD and got[3]["length"] == 0
        assert got[4]["status"] & BIT_TRUNCATED and got[4]["payload"] == b"0123456789abcdef" and got[4]["length"] == 16
        for g in got[:4] + got[5:]:
            assert not g["status"] & BIT_TRUNCATED
            assert set(g["padding"]) <= {0}
        assert all(g["status"] & BIT_WINDOW for g in got)  # no service status: trigger treated as open
        assert plc.read() is None
        st = sink.state()
        assert st["delivered"] == len(sent) and st["queued"] == 0 and st["connected"] and st["presented_id"] is None
        assert plc.client.read_holding_registers(REG_ACK, count=1, device_id=1).registers == [6]
    finally:
        plc.close()
        sink.close()


def test_plc_disconnects_mid_stream_and_gets_the_unacked_result_again(tmp_path: Path) -> None:
    port = free_port()
    sink = make_sink(tmp_path, port)
    try:
        for i in range(1, 31):
            sink.emit(result(i))
        plc = Plc(port)
        got = plc.take(10)
        seen = plc.read()  # the 11th, read but not acknowledged when the PLC drops off
        assert seen["id"] == 11
        plc.close()
        deadline = time.monotonic() + 10
        while sink.state()["clients"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sink.state()["clients"] == 0
        plc = Plc(port)
        again = plc.read()
        assert again == seen, "the unacknowledged result must be presented again, same counter"
        got += plc.take(20)
        plc.close()
        ids = [g["id"] for g in got]
        assert ids == list(range(1, 31)), "none lost, none skipped, none twice"
        assert [g["payload"] for g in got] == [f"LABEL-{i:06d}".encode() for i in range(1, 31)]
    finally:
        sink.close()


def test_restart_with_results_queued_presents_them_in_order(tmp_path: Path) -> None:
    port = free_port()
    sink = make_sink(tmp_path, port)
    plc = Plc(port)
    for i in range(1, 21):
        sink.emit(result(i))
    first = plc.take(5)
    presented = plc.read()
    t0 = time.monotonic()
    sink.close(timeout=60)  # the PLC is still connected but acknowledges nothing more
    assert time.monotonic() - t0 < 30, "a stalled PLC must not hold close() for the whole timeout"
    plc.close()

    port2 = free_port()
    sink = make_sink(tmp_path, port2)
    try:
        for i in range(21, 26):
            sink.emit(result(i))
        plc = Plc(port2)
        again = plc.read()
        assert again["id"] == presented["id"] == 6
        assert again["counter"] == presented["counter"] == 6, "the counter survives the restart"
        rest = plc.take(20)
        plc.close()
        assert [g["id"] for g in first + rest] == list(range(1, 26))
        assert [g["counter"] for g in first + rest] == list(range(1, 26))
    finally:
        sink.close()


def raw_request(sock: socket.socket, tid: int, unit: int, pdu: bytes) -> bytes:
    """One Modbus TCP request on a raw socket, for function codes the client does not offer."""
    sock.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
    head = b""
    while len(head) < 7:
        chunk = sock.recv(7 - len(head))
        assert chunk, "server closed the connection"
        head += chunk
    _, _, length, _ = struct.unpack(">HHHB", head)
    body = b""
    while len(body) < length - 1:
        body += sock.recv(length - 1 - len(body))
    return body


def test_bad_requests_get_modbus_exceptions_and_the_server_keeps_serving(tmp_path: Path, caplog) -> None:
    port = free_port()
    sink = make_sink(tmp_path, port, payload_registers=4)
    plc = Plc(port, payload_registers=4)
    try:
        sink.emit(result(1, "OK"))
        c = plc.client
        beyond = c.read_holding_registers(REG_PAYLOAD, count=5, device_id=1)  # one past the map
        assert beyond.isError() and beyond.exception_code == 2
        for _ in range(3):
            readonly = c.write_register(0, 1, device_id=1)
            assert readonly.isError() and readonly.exception_code == 2
        assert c.read_discrete_inputs(0, count=1, device_id=1).exception_code == 1
        wrong_unit = c.read_holding_registers(0, count=1, device_id=7)
        assert wrong_unit.isError() and wrong_unit.exception_code == 0x0B
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            answer = raw_request(s, 1, 1, bytes([0x41, 0, 0]))  # a function code nobody defines
            assert answer[0] == 0x41 | 0x80 and answer[1] == 1  # illegal function
            answer = raw_request(s, 2, 1, struct.pack(">BHH", 3, 0, 2))  # same connection still works
            assert answer[:2] == bytes([3, 4])
        assert plc.take(1)[0]["payload"] == b"OK"
        st = sink.state()
        assert st["bad_requests"] >= 7
        logged = [r.getMessage() for r in caplog.records if "function 6 answered" in r.getMessage()]
        assert len(logged) == 1, f"a repeated bad request is logged once: {logged}"
        assert not [r for r in caplog.records if r.name.startswith("pymodbus")], "pymodbus's own per-frame warnings"
    finally:
        plc.close()
        sink.close()


def test_connections_over_max_clients_are_refused_without_stalling_the_others(tmp_path: Path) -> None:
    port = free_port()
    sink = make_sink(tmp_path, port, max_clients=2)
    plcs = [Plc(port), Plc(port)]
    try:
        deadline = time.monotonic() + 10
        while sink.state()["clients"] < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10)
        with extra:
            try:
                assert extra.recv(1) == b"", "the third connection must be closed by the server"
            except ConnectionResetError:
                pass
        assert sink.state()["refused"] == 1 and sink.state()["clients"] == 2
        for i in range(1, 5):
            sink.emit(result(i))
        a = plcs[0].take(2)
        b = plcs[1].take(2)
        assert [g["id"] for g in a + b] == [1, 2, 3, 4]
        plcs[0].close()
        deadline = time.monotonic() + 10
        while sink.state()["clients"] > 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        plcs[0] = Plc(port)  # a freed slot is usable again
        assert plcs[0].read() is None
    finally:
        for p in plcs:
            p.close()
        sink.close()


def test_a_hung_client_never_blocks_emit_and_is_cut_off_when_idle(tmp_path: Path) -> None:
    port = free_port()
    sink = make_sink(tmp_path, port, idle_timeout_s=1)
    hung = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        hung.sendall(struct.pack(">HHHB", 1, 0, 6, 1) + b"\x03")  # half a request, then silence
        done = threading.Event()

        def produce() -> None:
            for i in range(1, 1001):
                sink.emit(result(i))
            done.set()

        threading.Thread(target=produce, daemon=True).start()
        assert done.wait(120), "emit blocked while a client hangs"
        plc = Plc(port)
        assert [g["id"] for g in plc.take(3)] == [1, 2, 3]
        plc.close()
        try:
            assert hung.recv(1) == b"", "the silent client is closed after idle_timeout_s"
        except ConnectionResetError:
            pass
        assert sink.state()["queued"] == 997
    finally:
        hung.close()
        sink.close()


def test_trigger_coil_calls_the_handler(tmp_path: Path) -> None:
    port = free_port()
    calls: list[str] = []
    sink = ModbusSink("plc", "dev1", {"port": port, "outbox": str(tmp_path / "o.sqlite")}, trigger_handler=calls.append,
                      status_provider=lambda: {"service": "running", "trigger": {"open": bool(calls) and calls[-1] == "on"}})
    sink.start()
    plc = Plc(port)
    try:
        assert not plc.client.read_coils(0, count=1, device_id=1).bits[0]
        assert not plc.client.write_coil(0, True, device_id=1).isError()
        time.sleep(0.3)  # the status is cached for 0.2 s
        assert plc.client.read_coils(0, count=1, device_id=1).bits[0]
        assert plc.client.read_holding_registers(0, count=1, device_id=1).registers[0] & BIT_WINDOW
        assert not plc.client.write_coil(0, False, device_id=1).isError()
        assert calls == ["on", "off"]
        assert plc.client.write_coil(1, True, device_id=1).exception_code == 2
    finally:
        plc.close()
        sink.close()


def test_options_and_port_in_use_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'unit_id'"):
        validate_options("m", "d", {"unit_id": 248})
    with pytest.raises(ValueError, match="'payload_registers'"):
        validate_options("m", "d", {"payload_registers": 0})
    with pytest.raises(ValueError, match="'outbox_policy'"):
        validate_options("m", "d", {"outbox_policy": "keep"})
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        sink = ModbusSink("plc", "dev1", {"port": port, "outbox": str(tmp_path / "o.sqlite")})
        with pytest.raises(OSError) as e:
            sink.start()
        assert str(e.value) == f"port {port}: address already in use"
        sink.close()


def test_ten_thousand_results_through_the_handshake_with_reconnects_and_a_restart(tmp_path: Path) -> None:
    """The closing-note run: 10,000 results produced while the PLC reads them; the PLC drops
    its connection every 1,500 results and the sink restarts once. Counts printed."""
    total = 10_000
    port = free_port()
    sink = make_sink(tmp_path, port)
    got: list[dict] = []
    produced = 0

    def produce(upto: int) -> None:
        nonlocal produced
        for i in range(produced + 1, upto + 1):
            sink.emit(result(i, f"R{i:08d}-ümlaut"))
            produced = i

    t = threading.Thread(target=produce, args=(total // 2,), daemon=True)
    t.start()
    plc = Plc(port)
    reconnects = 0
    while len(got) < total // 2:
        got += plc.take(min(1500, total // 2 - len(got)), timeout=300)
        plc.close()
        reconnects += 1
        plc = Plc(port)
    t.join(60)
    plc.close()
    sink.close(timeout=0.5)
    sink = make_sink(tmp_path, port)  # restart, with whatever is queued
    t = threading.Thread(target=produce, args=(total,), daemon=True)
    t.start()
    plc = Plc(port)
    got += plc.take(total - len(got), timeout=600)
    t.join(60)
    extra = plc.read()
    plc.close()
    st = sink.state()
    sink.close()
    ids = [g["id"] for g in got]
    lost = len(set(range(1, total + 1)) - set(ids))
    print(f"\nmodbus 10k: produced {produced}, read through handshake {len(got)}, lost {lost}, "
          f"duplicates {len(ids) - len(set(ids))}, reconnects {reconnects}, restarts 1, queued after {st['queued']}")
    assert produced == total and extra is None and st["queued"] == 0
    assert ids == list(range(1, total + 1)) and lost == 0
    assert all(g["payload"] == f"R{g['id']:08d}-ümlaut".encode() for g in got)


def start_service(cfg: Path, port: int) -> tuple[subprocess.Popen, list[str], Plc]:
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(l.decode(errors="replace") for l in proc.stdout), daemon=True).start()
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        if any("serving on" in l for l in lines):
            return proc, lines, Plc(port, payload_registers=128)
        time.sleep(0.05)


def jsonl_results(path: Path) -> list[tuple[int, bytes, bool]]:
    ref = [json.loads(l) for l in path.read_text().splitlines()]
    return [(r["id"], base64.b64decode(r["bytes_b64"]) if r.get("bytes_b64") else (r["text"] or "").encode(),
             r["kind"] == "noread") for r in ref]


def test_run_service_plc_reads_every_result_through_the_handshake(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "config.toml"
    text = f"""
device_id = "modbus-e2e"
state_dir = "{tmp_path / 'state'}"
shutdown_timeout_s = 60

[source]
kind = "synthetic"
realtime = false
frames = 300
width = 640
height = 360

[[sinks]]
kind = "jsonl"
name = "ref"
path = "{tmp_path / 'ref.jsonl'}"

[[sinks]]
kind = "modbus"
name = "plc"
port = {port}
payload_registers = 128
"""
    cfg.write_text(text)
    # 1. The service reads its 300 frames and stops by itself; it waits (shutdown_timeout_s) for
    #    the connected PLC to take what is queued.
    proc, lines, plc = start_service(cfg, port)
    got: list[dict] = []
    try:
        online = plc.client.read_holding_registers(0, count=1, device_id=1).registers[0]
        deadline = time.monotonic() + 240
        while proc.poll() is None:
            assert time.monotonic() < deadline, f"stuck after {len(got)} results: {''.join(lines)[-3000:]}"
            try:
                r = plc.read()
            except Exception:  # the service closed the server: it is shutting down
                break
            if r is None:
                time.sleep(0.02)
                continue
            got.append(r)
            plc.ack(r["counter"])
        plc.close()
        code = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, "".join(lines)[-3000:]
    assert online & 1, "status bit0 (online) while the service runs"
    assert any("results still queued: ref 0, plc 0" in l for l in lines), "".join(lines)[-3000:]
    want = jsonl_results(tmp_path / "ref.jsonl")
    assert len(want) >= 10, "the synthetic conveyor should give results"
    assert [(g["id"], g["payload"], bool(g["status"] & BIT_NOREAD)) for g in got] == want
    first_run = len(want)

    # 2. A camera that never ends (frames = 0), stopped by SIGTERM while the PLC reads.
    cfg.write_text(text.replace("frames = 300", "frames = 0").replace("realtime = false", "realtime = true"))
    proc, lines, plc = start_service(cfg, port)
    got = []
    try:
        deadline = time.monotonic() + 120
        while len(got) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
            r = plc.read()
            if r is None:
                time.sleep(0.02)
                continue
            got.append(r)
            plc.ack(r["counter"])
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        plc.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, "".join(lines)[-3000:]
    want = jsonl_results(tmp_path / "ref.jsonl")[first_run:]
    assert [(g["id"], g["payload"], bool(g["status"] & BIT_NOREAD)) for g in got] == want[:len(got)]
    print(f"\nmodbus e2e: {first_run} results in jsonl, {first_run} read by the PLC through the handshake; "
          f"SIGTERM run: {len(got)} read, exit 0")
