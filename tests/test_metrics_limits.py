"""The /metrics endpoint under a flood of idle connections (issue 15 item 4): real sockets,
a real HTTP client. 500 connections that send half a request and stay idle must not cost a
thread each, must be closed by the server, and must not keep a fresh scrape from an answer."""

from __future__ import annotations

import resource
import socket
import threading
import time
import urllib.request

import pytest

from edge_runtime.service.metrics import MAX_CONNECTIONS, MetricsServer, Stats

IDLE = 500


@pytest.fixture
def server():
    # 500 client sockets + the server's own: more than a 1024-descriptor default leaves spare.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    stats = Stats()
    stats.frames = 7
    srv = MetricsServer(0, "127.0.0.1", stats, lambda: {"plc": {"queued": 3, "connected": True}})
    yield srv
    srv.close()
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
        assert r.status == 200
        return r.read().decode()


def closed_by_peer(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (BlockingIOError, socket.timeout):
        return False


def test_scrape_works(server):
    body = scrape(server.port)
    assert "edge_runtime_frames_total 7.0" in body
    assert 'edge_runtime_sink_queued{sink="plc"} 3.0' in body


def test_idle_partial_requests_do_not_hold_threads_or_block_a_scrape(server):
    threads_before = threading.active_count()
    idle: list[socket.socket] = []
    try:
        for _ in range(IDLE):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /metr")  # half a request line, then nothing
            idle.append(s)
        time.sleep(0.5)  # let the server take them all in
        # A thread per connection (prometheus_client's server) would show here.
        assert threading.active_count() < threads_before + MAX_CONNECTIONS + 4, threading.active_count()
        # The scrape arrives while the 500 are still open on our side; urlopen's 2 s timeout
        # is the "answered within 2 s".
        assert "edge_runtime_frames_total 7.0" in scrape(server.port)
        assert threading.active_count() < threads_before + MAX_CONNECTIONS + 4

        # Every idle connection is closed by the server within 10 s of being opened.
        for s in idle:
            s.setblocking(False)
        deadline = time.monotonic() + 10
        open_ = list(idle)
        while open_ and time.monotonic() < deadline:
            open_ = [s for s in open_ if not closed_by_peer(s)]
            time.sleep(0.1)
        assert not open_, f"{len(open_)} of {IDLE} idle connections still open after 10 s"
    finally:
        for s in idle:
            s.close()
    assert "edge_runtime_frames_total 7.0" in scrape(server.port)


def test_a_request_trickled_slowly_is_cut_off(server):
    """The timeout is for the whole request, not per read: one byte a second never completes."""
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        t0 = time.monotonic()
        closed = False
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n":
            try:
                s.sendall(bytes([b]))
            except OSError:
                closed = True
                break
            s.settimeout(0.5)
            try:
                if s.recv(1) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
            if time.monotonic() - t0 > 12:
                break
        assert closed and time.monotonic() - t0 < 10
    finally:
        s.close()


def test_unknown_path_and_method(server):
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{server.port}/nope", timeout=2)
    assert e.value.code == 404
    req = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=2)
    assert e.value.code == 405
