"""A real PostgreSQL for tests (Debian's `postgresql` package): initdb in a temporary folder owned
by the postgres user (the server refuses to run as root), its own free loopback port, trust auth,
stopped at teardown.

    from pg import Postgres, postgres   # tests/ is on sys.path; `postgres` is a fixture
    def test_x(postgres): ... postgres.url ...
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from edge_runtime.bench.peers import free_port


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found under /usr/lib/postgresql/*/bin "
                           "(install Debian's postgresql package: scripts/sysdeps.sh test)")
    return found[-1]


class Postgres:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port("127.0.0.1")
        self.dir = Path(tempfile.mkdtemp(prefix="pg-"))
        self.data = self.dir / "data"
        self.user = "postgres"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *cmd: str) -> None:
        p = subprocess.run([*self._as_user, *cmd], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[:2])} failed ({p.returncode}): {p.stdout[-1500:]} {p.stderr[-1500:]}")

    def start(self) -> "Postgres":
        """initdb (first time only) and start the server."""
        if not self.data.exists():
            self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                      "--no-sync")
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts, "-w", "-t", "60",
                  "start")
        return self

    def log_tail(self, n: int = 3000) -> str:
        try:
            return (self.dir / "log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def halt(self) -> None:
        """Stop the server (immediate: connections drop like a crash) and keep the data: start() again."""
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as_user, pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()
