"""A full disk must not lose results: the outbox holds what the disk refuses, in order."""

import sqlite3

from edge_runtime.outbox import Outbox


def fill_disk(box: Outbox) -> None:
    """SQLITE_FULL on every further page, exactly as a full file system reports it."""
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(box: Outbox) -> None:
    box._db.execute("PRAGMA max_page_count = 1073741823")


def test_results_refused_by_the_disk_are_held_delivered_and_written_later(tmp_path, caplog):
    path = tmp_path / "o.sqlite"
    box = Outbox(str(path), max_mb=0)
    for i in range(1, 4):
        box.put(i, b"x" * 100)
    fill_disk(box)
    caplog.set_level("ERROR")
    for i in range(4, 200):
        assert box.put(i, b"y" * 3000) is True
    assert box.held > 0 and box.disk_errors > 0
    assert sum("disk refused a write" in m for m in caplog.messages) == 1
    assert box.depth() == 199
    ids = [rid for rid, _ in box.peek(limit=1000)]
    assert ids == list(range(1, 200))  # delivery goes on, in id order, held ones included
    for rid in range(1, 11):
        box.ack(rid)  # some acks land on held rows, some need a delete the disk may refuse
    assert [rid for rid, _ in box.peek(limit=5)] == [11, 12, 13, 14, 15]
    free_disk(box)
    box.put(200, b"z")
    assert box.held == 0
    assert [rid for rid, _ in box.peek(limit=1000)] == list(range(11, 201))
    box.close()
    again = Outbox(str(path), max_mb=0)
    assert [rid for rid, _ in again.peek(limit=1000)] == list(range(11, 201))
    assert again.depth() == 190
    again.close()


def test_acks_the_disk_refuses_are_not_sent_again(tmp_path):
    box = Outbox(str(tmp_path / "o.sqlite"), max_mb=0)
    for i in range(1, 6):
        box.put(i, b"p" * 10)
    real = box._delete

    def refuse(rid):
        raise sqlite3.OperationalError("database or disk is full")

    box._delete = refuse
    box.ack(1)
    box.ack(2)
    assert [rid for rid, _ in box.peek()] == [3, 4, 5] and box.depth() == 3
    box._delete = real
    box.put(6, b"p")
    assert [rid for rid, _ in box.peek()] == [3, 4, 5, 6]
    assert box._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 4
    box.close()
