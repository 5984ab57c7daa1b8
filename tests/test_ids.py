"""The id allocator: durable, never reused, and not stopped by a full disk or an fd shortage."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
from pathlib import Path

import pytest

from edge_runtime.service import ids as ids_mod
from edge_runtime.service.ids import MAX_ID, IdAllocator, IdsUnavailable, StateDirError, reserved_in


def test_reserves_blocks_durably_and_never_reuses(tmp_path):
    a = IdAllocator(str(tmp_path), block=10)
    got = [a.next() for _ in range(12)]
    assert got == list(range(1, 13))
    assert reserved_in(str(tmp_path)) == 20
    a.close()  # as after a crash: ids 13..20 were reserved, never handed out
    b = IdAllocator(str(tmp_path), block=10)
    assert b.next() == 21
    b.close()


def test_a_plain_number_file_from_an_older_version_is_continued(tmp_path):
    (tmp_path / "ids").write_text("2000\n")
    a = IdAllocator(str(tmp_path), block=10)
    assert a.next() == 2001
    a.close()
    assert reserved_in(str(tmp_path)) == 2010


def test_a_torn_slot_falls_back_to_the_other_and_is_the_next_one_written(tmp_path):
    a = IdAllocator(str(tmp_path), block=10)
    a.next()  # reserves 10 (slot 0)
    a.close()
    path = tmp_path / "ids"
    blob = bytearray(path.read_bytes())
    blob[ids_mod._SLOT:ids_mod._SLOT + 10] = b"9999999999"  # slot 1 torn mid-write: its CRC fails
    path.write_bytes(bytes(blob))
    b = IdAllocator(str(tmp_path), block=10)
    assert b.next() == 11
    b.close()
    # The newest reservation (20) went to the torn slot; the good old one (10) is still there.
    raw = path.read_bytes()
    assert ids_mod._parse_slot(raw[:64]) == 10 and ids_mod._parse_slot(raw[ids_mod._SLOT:ids_mod._SLOT + 64]) == 20


def test_floor_from_the_outboxes_wins_over_a_missing_or_older_file(tmp_path):
    a = IdAllocator(str(tmp_path), block=10, floor=22028)
    assert a.file_reserved == 0 and a.next() == 22029
    a.close()
    b = IdAllocator(str(tmp_path), block=10, floor=5)  # a lower floor never moves ids back
    assert b.next() == 22039
    b.close()


@pytest.mark.parametrize("text", ["garbage", "-3", "99999999999999999999999"])
def test_corrupt_or_oversized_id_file_is_refused_not_reset(tmp_path, text):
    (tmp_path / "ids").write_text(text)
    with pytest.raises(StateDirError, match=r"ids: (corrupt id file|id \d+ is beyond)"):
        IdAllocator(str(tmp_path))
    # The lock is released with the refusal: a fixed file can be used right away.
    (tmp_path / "ids").write_text("7")
    a = IdAllocator(str(tmp_path))
    assert a.next() == 8
    a.close()


def test_ids_stop_below_the_json_safe_maximum(tmp_path):
    (tmp_path / "ids").write_text(str(MAX_ID - 1))
    a = IdAllocator(str(tmp_path), block=10)
    assert a.next() == MAX_ID
    with pytest.raises(IdsUnavailable, match="exhausted"):
        a.next()
    a.close()


def test_a_failed_reservation_hands_out_nothing_and_the_same_id_comes_next(tmp_path, monkeypatch):
    a = IdAllocator(str(tmp_path), block=2)
    assert [a.next(), a.next()] == [1, 2]
    real = os.pwrite

    def eio(fd, data, offset):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(ids_mod.os, "pwrite", eio)
    with pytest.raises(IdsUnavailable, match="Input/output error"):
        a.next()
    monkeypatch.setattr(ids_mod.os, "pwrite", real)
    assert a.next() == 3
    a.close()
    assert reserved_in(str(tmp_path)) == 4


@contextlib.contextmanager
def tmpfs(path, size: str = "256k"):
    """A real small file system mounted at `path` (the tests run as root, as CI does)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    with tmpfs(tmp_path / "disk") as mnt:
        yield mnt


def fill(directory) -> str:
    """Fill the file system holding `directory` to the last byte (the soak's own filler)."""
    from edge_runtime.bench.soak import _fill_disk

    return str(_fill_disk(Path(directory)))


def test_full_disk_does_not_stop_reservations_once_the_file_exists(tiny_disk):
    a = IdAllocator(str(tiny_disk), block=3)
    assert a.next() == 1
    fill(tiny_disk)
    with pytest.raises(OSError):
        (tiny_disk / "probe").write_bytes(b"x" * 8192)  # the disk really is full
    assert [a.next() for _ in range(30)] == list(range(2, 32))  # 10 reservations on a full disk
    a.close()
    assert reserved_in(str(tiny_disk)) == 33


def test_full_disk_before_the_file_exists_is_a_retryable_refusal(tiny_disk):
    filler = fill(tiny_disk)
    a = IdAllocator(str(tiny_disk), block=3)
    with pytest.raises(IdsUnavailable, match="No space left"):
        a.next()
    os.unlink(filler)
    assert a.next() == 1
    a.close()


def test_no_free_file_descriptor_does_not_stop_reservations(tmp_path):
    a = IdAllocator(str(tmp_path), block=2)
    assert a.next() == 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (top + 1, hard))
    plugs = []
    try:
        while True:  # take every free descriptor below the limit: each further open is EMFILE
            try:
                plugs.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                break
        with pytest.raises(OSError, match="Too many open files"):
            open(tmp_path / "probe", "w")
        got = [a.next() for _ in range(10)]
    finally:
        for fd in plugs:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert got == list(range(2, 12))
    a.close()
