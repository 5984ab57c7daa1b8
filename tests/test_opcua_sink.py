"""opcua sink against a real asyncua client over real sockets: AutoID browse names, scan events,
Scan/ScanStart/ScanStop, security beyond loopback, connection cap, and `edge-runtime run` end to end."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from asyncua import Client, ua
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography.x509.oid import ExtendedKeyUsageOID

from edge_runtime.sinks import opcua_model as model
from edge_runtime.sinks.opcua import OpcuaSink, validate_options

ROOT = Path(__file__).resolve().parent.parent
AI = model.AUTOID_URI


def result(i: int, text: str = "LOT-1", **extra) -> dict:
    r = {"id": i, "device_id": "cam", "ts": "2026-11-25T14:54:43.276Z", "kind": "read", "text": text,
         "format": "QRCode", "corners": [[10.0, 317.0], [118.0, 308.0], [127.0, 414.0], [19.0, 425.0]]}
    r.update(extra)
    return r


class Events:
    def __init__(self) -> None:
        self.got: list = []

    def event_notification(self, event) -> None:
        self.got.append(event)


async def wait_for(cond, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def device(client: Client, device_id: str = "cam"):
    """The device object, found the way an AutoID client does: namespace by URI, then names."""
    await client.load_data_type_definitions()
    ai = await client.get_namespace_index(AI)
    for node in await client.nodes.objects.get_children():
        if (await node.read_type_definition()) == ua.NodeId(model.ID_OPTICAL_READER_DEVICE_TYPE, ai):
            if (await node.read_browse_name()).Name == device_id:
                return ai, node
    raise AssertionError("no OpticalReaderDeviceType under Objects")


@pytest.fixture(scope="module")
def sink():
    calls: list[str] = []
    status = {"reads": 7, "source": {"state": "open"}, "trigger": {"source": "opcua"}}
    s = OpcuaSink("ua", "cam", {"port": 0, "scan_timeout_ms": 500}, trigger_handler=calls.append,
                  status_provider=lambda: status)
    s.calls, s.status = calls, status
    s.start()
    yield s
    s.close()


def run(coro):
    return asyncio.run(coro)


def test_browse_by_autoid_names_read_variables_and_receive_scan_events(sink):
    async def go():
        async with Client(f"opc.tcp://127.0.0.1:{sink.port}/") as c:
            ai, dev = await device(c)
            assert await (await dev.get_child(f"{ai}:DeviceName")).read_value() == "cam"
            assert await (await dev.get_child(f"{ai}:AutoIdModelVersion")).read_value() == "1.00"
            assert await (await dev.get_child(f"{ai}:DeviceStatus")).read_value() == model.IDLE
            vi = await c.get_namespace_index(model.VENDOR_URI)
            await wait_for(lambda: True)
            h = Events()
            sub = await c.create_subscription(20, h)
            await sub.subscribe_events(dev, c.get_node(ua.NodeId(model.ID_OPTICAL_SCAN_EVENT_TYPE, ai)))
            sink.emit(result(101, "LOT-101"))
            sink.emit(result(102, "\u00ff", bytes_b64="/w=="))  # raw byte 0xff: not UTF-8
            sink.emit({**result(103), "kind": "noread", "text": None, "corners": None})
            await wait_for(lambda: len(h.got) == 3)
            first = h.got[0].ScanResult[0]
            assert first.ScanData.String == "LOT-101" and first.CodeType == "RAW:STRING"
            assert first.Symbology == "QRCode" and first.Grade == model.NOT_GRADED
            assert (first.Position.PositionX, first.Position.PositionY) == (68, 366)
            assert h.got[0].DeviceName == "cam"
            assert h.got[1].ScanResult[0].ScanData.ByteString == b"\xff"
            assert h.got[2].ScanResult == []
            # the full event carries our extras: corners, id, the whole result
            full = Events()
            sub2 = await c.create_subscription(20, full)
            await sub2.subscribe_events(dev, c.get_node(ua.NodeId(model.EVENT_TYPE, vi)))
            sink.emit(result(104, "LOT-104", quality={"grade": "B", "score": 3.0}))
            await wait_for(lambda: len(full.got) == 1)
            ev = full.got[0]
            assert ev.ResultId == 104 and ev.ResultKind == "read" and ev.ScanResult[0].Grade == 3.0
            assert ev.Corners == [10.0, 317.0, 118.0, 308.0, 127.0, 414.0, 19.0, 425.0]
            assert json.loads(ev.ResultJson)["text"] == "LOT-104"
            assert await (await dev.get_child(f"{ai}:LastScanData")).read_value() == "LOT-104"
            assert json.loads(await (await dev.get_child(f"{vi}:LastScanResultJson")).read_value())["id"] == 104
            counters = await dev.get_child(f"{vi}:Counters")
            await wait_for(lambda: sink.events >= 4)
            await asyncio.sleep(model_refresh())
            assert await (await counters.get_child(f"{vi}:reads")).read_value() == 7
            assert await (await counters.get_child(f"{vi}:events")).read_value() >= 4
            assert await (await counters.get_child(f"{vi}:grade_B")).read_value() == 1
            assert await (await counters.get_child(f"{vi}:ungraded")).read_value() == 2  # 101, 102

    run(go())
    assert sink.state()["dropped"] == 0


def model_refresh() -> float:
    from edge_runtime.sinks import opcua

    return opcua.STATUS_INTERVAL_S * 1.5


def test_only_the_scan_methods_are_exposed_on_the_device(sink):
    async def go():
        async with Client(f"opc.tcp://127.0.0.1:{sink.port}/") as c:
            ai, dev = await device(c)
            methods, todo = [], [dev]
            while todo:
                node = todo.pop()
                for child in await node.get_children():
                    if await child.read_node_class() == ua.NodeClass.Method:
                        methods.append((await child.read_browse_name()).to_string())
                    else:
                        todo.append(child)
            assert sorted(methods) == sorted(f"{ai}:{m}" for m in ("Scan", "ScanStart", "ScanStop"))
            with pytest.raises(ua.UaStatusCodeError):  # and nothing is writable
                await (await dev.get_child(f"{ai}:DeviceName")).write_value("renamed")
            assert await (await dev.get_child(f"{ai}:DeviceName")).read_value() == "cam"

    run(go())


def test_scan_start_and_stop_open_and_close_the_trigger_window(sink):
    async def go():
        async with Client(f"opc.tcp://127.0.0.1:{sink.port}/") as c:
            ai, dev = await device(c)
            sink.calls.clear()
            assert await dev.call_method(f"{ai}:ScanStart", None) == model.SUCCESS
            assert sink.calls == ["on"]
            await asyncio.sleep(model_refresh())
            assert await (await dev.get_child(f"{ai}:DeviceStatus")).read_value() == model.SCANNING
            assert await dev.call_method(f"{ai}:ScanStop") is None  # no output arguments
            assert sink.calls == ["on", "off"]
            # a bad request gets the protocol's error, and the sink carries on
            before = sink.bad_requests
            with pytest.raises(ua.uaerrors.BadInvalidArgument):
                await dev.call_method(f"{ai}:ScanStart", ua.ScanSettings(Duration=-5.0, Cycles=0, DataAvailable=True))
            with pytest.raises(ua.uaerrors.BadTooManyArguments):
                await dev.call_method(f"{ai}:ScanStop", 1)
            assert sink.bad_requests == before + 2
            assert sink.calls == ["on", "off"]

    run(go())


def test_scan_returns_the_next_result_or_no_identifier_on_timeout(sink):
    async def go():
        async with Client(f"opc.tcp://127.0.0.1:{sink.port}/") as c:
            ai, dev = await device(c)
            sink.calls.clear()
            threading.Timer(0.2, sink.emit, [result(201, "LOT-201")]).start()
            results, status = await dev.call_method(f"{ai}:Scan", None)
            assert status == model.SUCCESS and [r.ScanData.String for r in results] == ["LOT-201"]
            assert sink.calls == ["on", "off"]
            t0 = time.monotonic()
            results, status = await dev.call_method(
                f"{ai}:Scan", ua.ScanSettings(Duration=300.0, Cycles=0, DataAvailable=True))
            assert (results, status) == ([], model.NO_IDENTIFIER)
            assert time.monotonic() - t0 >= 0.3
            # trigger.source is not opcua: Scan just waits for the next read, no trigger call
            sink.status["trigger"]["source"] = "serial"
            await asyncio.sleep(model_refresh())
            sink.calls.clear()
            threading.Timer(0.2, sink.emit, [result(202, "LOT-202")]).start()
            results, status = await dev.call_method(f"{ai}:Scan", None)
            assert [r.ScanData.String for r in results] == ["LOT-202"] and sink.calls == []
            sink.status["trigger"]["source"] = "opcua"
            await asyncio.sleep(model_refresh())

    run(go())


def test_connections_beyond_max_clients_are_refused():
    s = OpcuaSink("ua", "cam", {"port": 0, "max_clients": 2})
    s.start()
    try:
        async def go():
            a, b = Client(f"opc.tcp://127.0.0.1:{s.port}/"), Client(f"opc.tcp://127.0.0.1:{s.port}/")
            await a.connect()
            await b.connect()
            try:
                third = Client(f"opc.tcp://127.0.0.1:{s.port}/", timeout=3)
                with pytest.raises(Exception):
                    await third.connect()
                assert s.state()["clients"] == 2
            finally:
                await a.disconnect()
                await b.disconnect()

        run(go())
        # A hung peer (TCP open, never a byte) and a flood of results: emit never waits.
        hung = socket.create_connection(("127.0.0.1", s.port))
        t0 = time.monotonic()
        for i in range(2000):
            s.emit(result(i + 1))
        assert time.monotonic() - t0 < 2.0
        end = time.monotonic() + 20
        while s.emitted < 2000 and time.monotonic() < end:
            time.sleep(0.05)
        assert (s.emitted, s.dropped) == (2000, 0)
        hung.close()
    finally:
        s.close()


def test_config_refuses_anonymous_or_plain_access_beyond_loopback(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="'host'.*not loopback.*username_env"):
        validate_options("ua", "cam", {"host": "0.0.0.0"})
    monkeypatch.setenv("UA_USER", "plc")
    monkeypatch.setenv("UA_PASS", "secret")
    creds = {"username_env": "UA_USER", "password_env": "UA_PASS"}
    with pytest.raises(ValueError, match="'security' must be Basic256Sha256"):
        validate_options("ua", "cam", {"host": "0.0.0.0", **creds})
    with pytest.raises(ValueError, match="'password_env'"):
        validate_options("ua", "cam", {"username_env": "UA_USER"})
    with pytest.raises(ValueError, match="'security'.*needs certificate"):
        validate_options("ua", "cam", {"security": "Basic256Sha256_SignAndEncrypt"})
    with pytest.raises(ValueError, match="'max_clients'"):
        validate_options("ua", "cam", {"max_clients": 0})
    # the config file path: the same refusal, naming the key, exit status 2
    cfg = tmp_path / "c.toml"
    cfg.write_text('device_id = "cam"\n[source]\nkind = "synthetic"\n[[sinks]]\nkind = "opcua"\nhost = "0.0.0.0"\n')
    p = subprocess.run([sys.executable, "-m", "edge_runtime", "check-config", str(cfg)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "sinks[0].host" in p.stderr and "Traceback" not in p.stderr


def non_loopback_ipv4() -> str:
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout.split()
    return next(a for a in out if "." in a and not a.startswith("127."))


def test_beyond_loopback_anonymous_is_refused_and_the_user_gets_in(monkeypatch, tmp_path):
    host = non_loopback_ipv4()
    monkeypatch.setenv("UA_USER", "plc")
    monkeypatch.setenv("UA_PASS", "s3cret")
    use = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]

    async def certs(name: str) -> tuple[Path, Path]:
        key, cert = tmp_path / f"{name}.pem", tmp_path / f"{name}.der"
        await setup_self_signed_certificate(key, cert, f"urn:test:{name}", host, use, {"commonName": name})
        return cert, key

    srv_cert, srv_key = run(certs("server"))
    cli_cert, cli_key = run(certs("client"))
    s = OpcuaSink("ua", "cam", {"host": host, "port": 0, "security": "Basic256Sha256_SignAndEncrypt",
                                "certificate": str(srv_cert), "private_key": str(srv_key),
                                "username_env": "UA_USER", "password_env": "UA_PASS"})
    s.start()
    try:
        url = f"opc.tcp://{host}:{s.port}/"

        async def connect(user: str | None, password: str | None, secure: bool = True) -> Client:
            c = Client(url, timeout=5)
            if secure:
                await c.set_security(security_policies.SecurityPolicyBasic256Sha256, str(cli_cert), str(cli_key))
            if user is not None:
                c.set_user(user)
                c.set_password(password)
            await c.connect()
            return c

        async def go():
            with pytest.raises(ua.UaStatusCodeError):  # anonymous
                await connect(None, None)
            with pytest.raises(ua.UaStatusCodeError):
                await connect("plc", "wrong")
            with pytest.raises(Exception):  # no unsecured endpoint at all
                await connect("plc", "s3cret", secure=False)
            c = await connect("plc", "s3cret")
            try:
                ai, dev = await device(c)
                assert await (await dev.get_child(f"{ai}:DeviceName")).read_value() == "cam"
            finally:
                await c.disconnect()

        run(go())
    finally:
        s.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_run_end_to_end_every_result_of_the_conveyor_arrives_as_an_event(tmp_path):
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
device_id = "ua-e2e"
state_dir = "{tmp_path / 'state'}"

[source]
kind = "synthetic"
realtime = true
frames = 1800  # ends the run if the test cannot; normally SIGTERM does
width = 640
height = 360

[trigger]
mode = "window"
source = "opcua"

[[sinks]]
kind = "jsonl"
name = "ref"
path = "{tmp_path / 'ref.jsonl'}"

[[sinks]]
kind = "opcua"
name = "ua"
port = {port}
""")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime", "run", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(x.decode(errors="replace") for x in proc.stdout), daemon=True).start()
    try:
        async def go():
            end = time.monotonic() + 90
            while True:
                try:
                    c = Client(f"opc.tcp://127.0.0.1:{port}/", timeout=5)
                    await c.connect()
                    break
                except (OSError, asyncio.TimeoutError):
                    assert time.monotonic() < end and proc.poll() is None, "".join(lines)[-3000:]
                    await asyncio.sleep(0.2)
            try:
                ai, dev = await device(c, "ua-e2e")
                vi = await c.get_namespace_index(model.VENDOR_URI)
                h = Events()
                sub = await c.create_subscription(20, h)
                await sub.subscribe_events(dev, c.get_node(ua.NodeId(model.EVENT_TYPE, vi)))
                # The window opens only now: every result comes after the subscription.
                assert await dev.call_method(f"{ai}:ScanStart", None) == model.SUCCESS
                await asyncio.sleep(6.0)
                await dev.call_method(f"{ai}:ScanStop")
                ref_path = tmp_path / "ref.jsonl"

                def ref() -> list[dict]:
                    return [json.loads(x) for x in ref_path.read_text().splitlines()] if ref_path.exists() else []

                await asyncio.sleep(1.5)  # the window closes at the next frame; its results follow
                await wait_for(lambda: len(h.got) >= len(ref()), 10)
                return ref(), h.got
            finally:
                await c.disconnect()

        want, events = run(go())
        reads = [r for r in want if r["kind"] == "read"]
        assert len(reads) >= 3, want
        got = [(e.ResultId, json.loads(e.ResultJson)) for e in events]
        assert [g[0] for g in got] == [r["id"] for r in want]
        assert [g[1] for g in got] == want
        for e, r in zip(events, want):
            if r["kind"] == "read":
                assert e.ScanResult[0].ScanData.String == r["text"]
                assert e.Corners == [c for p in r["corners"] for c in p]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)[-3000:]
