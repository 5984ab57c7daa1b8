"""Durable result ids: strictly increasing per device, never reused, even after SIGKILL.

Plant systems de-duplicate and order by id, so an id handed out twice would make them
drop a real result. The allocator reserves ids in blocks: before the first id of a block
is used, the block's end is written durably to `state_dir/ids`. After a crash the next
process starts above the last reserved block, so at worst the unused rest of a block is
skipped: gaps are allowed, reuse is not.

How a reservation is written, and why: the file is created once, at a fixed size, and
each reservation overwrites one of two slots in place (alternating, each with a CRC,
each in its own disk sector) followed by fdatasync. Overwriting blocks that already
exist needs no new space and no new file descriptor, so a full disk or an exhausted fd
table on `state_dir` cannot stop ids (the old write-temp-and-rename could, and the frame
then failed). A torn write can only damage the slot being written; the other still holds
the previous reservation, and the loader takes the largest valid slot. A plain number
(the format of earlier versions, or what an operator wrote by hand) is still read.

When a reservation cannot be written at all (EIO, a file system gone read-only),
`next()` raises `IdsUnavailable`; the service then holds its results in memory, in
order, until it can number them (service/loop.py): never an id that is not on disk.

One process per state_dir: an exclusive flock on `state_dir/lock` is held for the life
of the allocator, because two processes sharing the file would interleave ids.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib

DEFAULT_BLOCK = 1000
# Ids stay exact in every JSON consumer (JavaScript numbers, float64 parsers): 2**53 - 1.
MAX_ID = 2**53 - 1
_FILE = "ids"
_LOCK = "lock"
_SLOT = 4096  # one slot per page: a torn write cannot reach the other slot
_RECORD = 64


class StateDirError(RuntimeError):
    """The state directory cannot be used (busy, unreadable, corrupt id file)."""


class IdsUnavailable(OSError):
    """The next block of ids cannot be reserved durably right now; retry later."""


def _record(value: int) -> bytes:
    body = f"{value:d}"
    line = f"{body} {zlib.crc32(body.encode('ascii')):08x}"
    return line.encode("ascii").ljust(_RECORD - 1, b" ") + b"\n"


def _parse_slot(chunk: bytes) -> int | None:
    parts = chunk.strip(b"\0 \n").split()
    if len(parts) != 2:
        return None
    body, crc = parts
    try:
        if int(crc, 16) != zlib.crc32(body) or not body.isdigit():
            return None
        return int(body)
    except ValueError:
        return None


def parse(blob: bytes) -> tuple[int, int]:
    """(reserved end, slot holding it) from an id file's bytes; ValueError when it holds
    none. The slot is -1 for a plain number."""
    slots = [_parse_slot(blob[i:i + _RECORD]) for i in (0, _SLOT)]
    valid = [(v, i) for i, v in enumerate(slots) if v is not None]
    if valid:
        return max(valid)
    text = blob.decode("ascii").strip()  # a plain number: older versions, or written by hand
    if not text.isdigit():
        raise ValueError(text[:40])
    return int(text), -1


class IdAllocator:
    def __init__(self, state_dir: str, block: int = DEFAULT_BLOCK, floor: int = 0) -> None:
        """`floor`: the highest id known to be in use elsewhere in the state (outboxes):
        ids continue above it even when the id file is missing or older."""
        if block < 1:
            raise ValueError("block must be >= 1")
        self.state_dir = state_dir
        self.block = int(block)
        self._mutex = threading.Lock()
        os.makedirs(state_dir, exist_ok=True)
        self._lock_fd = os.open(os.path.join(state_dir, _LOCK), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(self._lock_fd)
            os.close(self._lock_fd)
            raise StateDirError(
                f"{state_dir}: in use by another edge-runtime process{f' (pid {holder})' if holder else ''}; "
                "give each instance its own state_dir"
            ) from None
        try:
            os.ftruncate(self._lock_fd, 0)
            os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        except OSError:
            pass  # the pid is only a hint for the "in use" message; a full disk must not stop us
        self._path = os.path.join(state_dir, _FILE)
        self._fd = -1
        self._slot = 0
        try:
            reserved = self._load()
        except StateDirError:
            self.close()
            raise
        self.file_reserved = reserved  # what the id file said, before `floor`
        reserved = max(reserved, int(floor))
        self._next = reserved + 1
        self._reserved = reserved

    @property
    def last_reserved(self) -> int:
        return self._reserved

    @property
    def last_issued(self) -> int:
        return self._next - 1

    def next(self) -> int:
        """The next id; reserves (durably) a new block first when the current one is used up.

        Raises IdsUnavailable when that reservation cannot be written now (nothing is
        handed out then; the same id is offered again on the next call)."""
        with self._mutex:
            if self._next > self._reserved:
                end = min(self._next + self.block - 1, MAX_ID)
                if self._next > end:
                    raise IdsUnavailable(f"{self._path}: ids exhausted at {MAX_ID}")
                self._store(end)
            rid = self._next
            self._next += 1
            return rid

    def close(self) -> None:
        """Release the state_dir lock. The reserved block end stays on disk (skipped next run)."""
        with self._mutex:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._lock_fd)
                    self._lock_fd = -1

    def _load(self) -> int:
        try:
            with open(self._path, "rb") as f:
                blob = f.read(2 * _SLOT)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StateDirError(f"{self._path}: cannot read id file: {exc.strerror or exc}") from None
        if not blob.strip(b"\0 \n"):
            return 0  # created, then the power went before the first reservation
        try:
            value, slot = parse(blob)
        except (ValueError, UnicodeDecodeError):
            # Refuse to guess: restarting from 0 would reuse ids the plant already has.
            shown = blob[:40].decode("ascii", "replace")
            raise StateDirError(
                f"{self._path}: corrupt id file ({shown!r}); write the last id the plant saw "
                "(or a larger number) into it to continue"
            ) from None
        if value > MAX_ID:
            raise StateDirError(
                f"{self._path}: id {value} is beyond the largest id JSON consumers keep exact ({MAX_ID}); "
                "write the last id the plant saw into it to continue"
            )
        # The next write goes to the other slot: the newest reservation is never the one
        # a torn write could damage.
        self._slot = 1 if slot == 0 else 0
        return value

    def _open(self) -> None:
        """Create the id file at its final size, both slots written, once: from then on a
        reservation only overwrites existing blocks."""
        try:
            fd = os.open(self._path, os.O_RDWR)
            if os.fstat(fd).st_size >= _SLOT + _RECORD:
                self._fd = fd
                return
            os.close(fd)  # an old plain-number file: rewritten in the slotted format below
        except FileNotFoundError:
            pass
        tmp = f"{self._path}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            blob = bytearray(_SLOT + _RECORD)
            blob[0:_RECORD] = _record(self._reserved)
            blob[_SLOT:_SLOT + _RECORD] = _record(self._reserved)
            os.write(fd, bytes(blob))
            os.fsync(fd)
            os.replace(tmp, self._path)
            fsync_dir(self.state_dir)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def _store(self, reserved: int) -> None:
        try:
            if self._fd < 0:
                self._open()
            slot = self._slot
            os.pwrite(self._fd, _record(reserved), slot * _SLOT)
            os.fdatasync(self._fd)
        except OSError as exc:
            raise IdsUnavailable(exc.errno, f"{self._path}: cannot reserve ids: {exc.strerror or exc}") from None
        self._slot = 1 - slot
        self._reserved = reserved


def fsync_dir(path) -> None:  # noqa: ANN001 - str or Path
    """A rename or a new file is durable only once its directory is synced too."""
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""


def reserved_in(state_dir: str) -> int:
    """The reserved end recorded in `state_dir/ids` (0 when there is none): for tools and tests."""
    try:
        with open(os.path.join(state_dir, _FILE), "rb") as f:
            blob = f.read(2 * _SLOT)
    except FileNotFoundError:
        return 0
    return parse(blob)[0] if blob.strip(b"\0 \n") else 0
