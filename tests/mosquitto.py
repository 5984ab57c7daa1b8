"""A real mosquitto broker for tests: own config file in a temp dir, a free loopback port,
start/stop/restart on the same port, killed on teardown (and if the test process dies).

The Broker itself is the soak bench's (edge_runtime/bench/peers.py), re-exported here with
its error as BrokerError: one implementation of the broker process. This module adds what only
tests need: the pytest fixtures, Subscriber and Proxy.

Why a real broker: the MQTT sink's promises (LWT, retained status, redelivery after a broker
restart, refused credentials, TLS failures) are broker behaviour; a fake would only test our
idea of the broker.

    from mosquitto import Broker, broker_fixture, make_broker   # tests/ is on sys.path

    broker = broker_fixture()                 # a started broker per test
    def test_x(broker): ... broker.port ...
    def test_y(make_broker):                  # custom config, all stopped at teardown
        b = make_broker(extra="password_file /x", allow_anonymous=False)

Broker(directory=None, port=None) picks a free port at construction, so a test may learn the
port, point a client at it, and only later call start() (the "broker down at start" case).

Also here: Subscriber (a recording paho subscriber with wait_for), Proxy (a socat relay whose
cut() drops one client's connection while the broker stays up), free_port().
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import Callable, Iterator

import pytest

# Re-exported to the tests, which import them from here.
from edge_runtime.bench.peers import HOST, Broker, _die_with_parent, free_port  # noqa: F401
from edge_runtime.bench.peers import PeerError as BrokerError


def broker_fixture(scope: str = "function", **kwargs) -> Callable:
    """A pytest fixture yielding a started Broker(**kwargs), stopped at teardown.
    Assign it in a test module: `broker = broker_fixture(persistence=True)`."""

    @pytest.fixture(scope=scope)
    def _broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
        b = Broker(tmp_path_factory.mktemp("mosquitto"), **kwargs)
        try:
            yield b.start()
        finally:
            b.close()

    return _broker


@pytest.fixture
def make_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Broker]]:
    """Factory for brokers with custom config; not started (call .start()), all stopped at teardown."""
    made: list[Broker] = []

    def make(port: int | None = None, **kwargs) -> Broker:
        b = Broker(tmp_path_factory.mktemp("mosquitto"), port, **kwargs)
        made.append(b)
        return b

    try:
        yield make
    finally:
        for b in made:
            b.close()


broker = broker_fixture()


class Subscriber:
    """A real paho subscriber that records every message (topic, payload, retain) it gets.

    It re-subscribes on every connect and reconnects quickly (1-2 s) after a broker restart.
    With clean_session=False and a broker started with persistence=True, messages published
    while it was reconnecting are queued by the broker and still arrive.
    """

    def __init__(
        self,
        port: int,
        topics: str | list[str] = "#",
        *,
        host: str = HOST,
        client_id: str | None = None,
        clean_session: bool = True,
        qos: int = 1,
        protocol: str = "3.1.1",
        ca_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self._mqtt = mqtt
        self.host, self.port = host, port
        self.topics = [topics] if isinstance(topics, str) else list(topics)
        self.qos = qos
        self.messages: list[tuple[str, bytes, bool]] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        kw: dict = {"client_id": client_id or f"test-sub-{os.getpid()}-{id(self):x}"}
        if protocol == "5":
            kw["protocol"] = mqtt.MQTTv5
        else:
            kw["protocol"] = mqtt.MQTTv311
            kw["clean_session"] = clean_session
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, **kw)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)
        if username:
            self.client.username_pw_set(username, password)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(t, self.qos) for t in self.topics])

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self._cond.notify_all()

    def start(self, timeout: float = 20.0) -> "Subscriber":
        self.client.connect_async(self.host, self.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(timeout):
            self.close()
            raise BrokerError(f"subscriber could not subscribe on {self.host}:{self.port} within {timeout}s")
        return self

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> "Subscriber":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on(self, topic: str) -> list[bytes]:
        with self._cond:
            return [p for t, p, _ in self.messages if t == topic]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        """Poll-free wait: re-check `predicate` whenever a message arrives, up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
            return True


class Proxy:
    """A TCP relay (socat) between a client and the broker: cut() drops the client's
    connection like a pulled cable while the broker, and its other clients, stay up;
    freeze() stalls it so messages pile up unacknowledged in flight first."""

    def __init__(self, target_port: int, port: int | None = None, host: str = HOST) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.target_port = target_port
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "Proxy":
        exe = shutil.which("socat") or "/usr/bin/socat"
        self.proc = subprocess.Popen(
            [exe, f"TCP-LISTEN:{self.port},bind={self.host},reuseaddr,fork", f"TCP:{self.host}:{self.target_port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: cut() reaches the forked relays too
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"socat on port {self.port} exited with {self.proc.returncode}")
            if _listening(self.host, self.port):
                return self
            time.sleep(0.05)
        self.cut()
        raise BrokerError(f"socat on port {self.port} did not listen within {timeout}s")

    def freeze(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGSTOP)

    def cut(self) -> None:
        """SIGKILL the relay and every forked connection: the client sees a reset."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)
        self.proc = None

    close = cut


def _listening(host: str, port: int) -> bool:
    # Probe via /proc rather than connect(): a probe connection through socat would open a
    # real connection to the broker.
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    try:
        with open("/proc/net/tcp") as f:
            return any(line.split()[1] == want and line.split()[3] == "0A" for line in f.readlines()[1:])
    except OSError:
        return False
