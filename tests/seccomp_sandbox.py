"""Run a command under the seccomp rules the unit file asks systemd for.

    python tests/seccomp_sandbox.py [--syscall-filter] COMMAND [ARGS...]

Why: MemoryDenyWriteExecute= breaks libraries that generate code at run time (JITs), and
SystemCallFilter= breaks code that needs a system call outside the allowed groups. Neither shows
up in `systemd-analyze`; it shows up on the line. The tests run the real runtime under the same
rules, without systemd:
- always MemoryDenyWriteExecute=yes, as systemd implements it (src/shared/seccomp-util.c):
  EPERM for mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC, and shmat
  with SHM_EXEC;
- with --syscall-filter, also the unit's SystemCallFilter= lines with SystemCallErrorNumber=EPERM:
  an allow-list of the groups' system calls (expanded by `systemd-analyze syscall-filter`, so
  exactly this systemd's definition of the groups), everything else EPERM; and its
  RestrictAddressFamilies=: socket() of any other family fails with EAFNOSUPPORT, as systemd does.
Loaded through libseccomp (a dependency of systemd itself) via ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parent.parent / "systemd" / "edge-runtime.service"
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
_ALLOW = 0x7FFF0000
_EPERM = 0x00050000 | errno.EPERM
_CMP_MASKED_EQ = 7


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    return lib


def _load(lib: ctypes.CDLL, ctx: int) -> None:
    rc = lib.seccomp_load(ctx)  # sets no_new_privs first, as NoNewPrivileges=yes does
    if rc != 0:
        raise OSError(-rc, "seccomp_load")


def install_mdwe() -> None:
    lib = _lib()
    ctx = lib.seccomp_init(_ALLOW)

    def deny(syscall: str, mask: int) -> None:
        nr = lib.seccomp_syscall_resolve_name(syscall.encode())
        if nr < 0:  # e.g. mmap2 exists on 32-bit ARM only
            return
        cmp = _ArgCmp(2, _CMP_MASKED_EQ, mask, mask)
        rc = lib.seccomp_rule_add_array(ctx, _EPERM, nr, 1, ctypes.byref(cmp))
        if rc != 0:
            raise OSError(-rc, f"seccomp rule for {syscall}")

    deny("mmap", PROT_WRITE | PROT_EXEC)
    deny("mmap2", PROT_WRITE | PROT_EXEC)
    deny("mprotect", PROT_EXEC)
    deny("pkey_mprotect", PROT_EXEC)
    deny("shmat", SHM_EXEC)
    _load(lib, ctx)


def _expand(group: str, seen: set[str] | None = None) -> set[str]:
    """System calls of a systemd group (`@name`), nested groups included."""
    seen = set() if seen is None else seen
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", group],
                         capture_output=True, text=True, check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= _expand(item, seen) if item.startswith("@") else {item}
    return calls


def unit_syscall_allow_list(unit: Path = UNIT) -> set[str]:
    """The unit's SystemCallFilter= lines, combined the way systemd does: the first line is an
    allow-list, later "~" lines remove from it, later plain lines add to it."""
    allowed: set[str] | None = None
    for line in unit.read_text().splitlines():
        m = re.match(r"SystemCallFilter=(~?)(.*)", line.strip())
        if not m:
            continue
        names: set[str] = set()
        for item in m.group(2).split():
            names |= _expand(item) if item.startswith("@") else {item}
        if m.group(1):
            assert allowed is not None, "a deny-list SystemCallFilter= first is not what this emulates"
            allowed -= names
        else:
            allowed = names if allowed is None else allowed | names
    assert allowed, f"no SystemCallFilter= in {unit}"
    return allowed


def unit_address_families(unit: Path = UNIT) -> set[int]:
    for line in unit.read_text().splitlines():
        if line.startswith("RestrictAddressFamilies="):
            import socket

            return {int(getattr(socket, name)) for name in line.split("=", 1)[1].split()}
    raise AssertionError(f"no RestrictAddressFamilies= in {unit}")


def install_address_families(allowed: set[int], af_max: int = 64) -> None:
    lib = _lib()
    ctx = lib.seccomp_init(_ALLOW)
    nr = lib.seccomp_syscall_resolve_name(b"socket")
    for family in range(af_max):
        if family in allowed:
            continue
        cmp = _ArgCmp(0, 4, family, 0)  # SCMP_CMP_EQ
        rc = lib.seccomp_rule_add_array(ctx, 0x00050000 | errno.EAFNOSUPPORT, nr, 1, ctypes.byref(cmp))
        if rc != 0:
            raise OSError(-rc, "seccomp rule for socket()")
    _load(lib, ctx)


def install_syscall_filter(allowed: set[str]) -> None:
    lib = _lib()
    ctx = lib.seccomp_init(_EPERM)
    for name in sorted(allowed):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:  # not a system call on this architecture
            continue
        rc = lib.seccomp_rule_add(ctx, _ALLOW, nr, 0)
        if rc != 0:
            raise OSError(-rc, f"seccomp allow {name}")
    _load(lib, ctx)


if __name__ == "__main__":
    args = sys.argv[1:]
    install_mdwe()
    if args and args[0] == "--syscall-filter":
        args = args[1:]
        install_address_families(unit_address_families())
        # Last: seccomp() itself is not on the allow-list (nor should the service need it).
        install_syscall_filter(unit_syscall_allow_list())
    os.execvp(args[0], args)
