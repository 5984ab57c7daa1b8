"""Durable result ids: strictly increasing per device, never reused, even after SIGKILL.

Plant systems de-duplicate and order by id, so an id handed out twice would make them
drop a real result. The allocator reserves ids in blocks: before the first id of a block
is used, the block's end is written to `state_dir/ids` (temp file, fsync, rename, fsync
of the directory). After a crash the next process starts above the last reserved block,
so at worst the unused rest of a block is skipped: gaps are allowed, reuse is not.

One process per state_dir: an exclusive flock on `state_dir/lock` is held for the life
of the allocator, because two processes sharing the file would interleave ids.
"""

from __future__ import annotations

import fcntl
import os
import threading

DEFAULT_BLOCK = 1000
_FILE = "ids"
_LOCK = "lock"


class StateDirError(RuntimeError):
    """The state directory cannot be used (busy, unreadable, corrupt id file)."""


class IdAllocator:
    def __init__(self, state_dir: str, block: int = DEFAULT_BLOCK) -> None:
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
        os.ftruncate(self._lock_fd, 0)
        os.write(self._lock_fd, f"{os.getpid()}\n".encode())
        self._path = os.path.join(state_dir, _FILE)
        reserved = self._load()
        self._next = reserved + 1
        self._reserved = reserved

    @property
    def last_reserved(self) -> int:
        return self._reserved

    def next(self) -> int:
        """The next id; reserves (durably) a new block first when the current one is used up."""
        with self._mutex:
            if self._next > self._reserved:
                self._store(self._next + self.block - 1)
            rid = self._next
            self._next += 1
            return rid

    def close(self) -> None:
        """Release the state_dir lock. The reserved block end stays on disk (skipped next run)."""
        with self._mutex:
            if self._lock_fd >= 0:
                try:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._lock_fd)
                    self._lock_fd = -1

    def _load(self) -> int:
        try:
            with open(self._path, encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as exc:
            raise StateDirError(f"{self._path}: cannot read id file: {exc}") from None
        try:
            value = int(text)
            if value < 0:
                raise ValueError
        except ValueError:
            # Refuse to guess: restarting from 0 would reuse ids the plant already has.
            raise StateDirError(
                f"{self._path}: corrupt id file ({text[:40]!r}); write the last id the plant saw "
                "(or a larger number) into it to continue"
            ) from None
        return value

    def _store(self, reserved: int) -> None:
        tmp = f"{self._path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{reserved}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)
        dfd = os.open(self.state_dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._reserved = reserved


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
