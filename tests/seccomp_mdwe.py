"""Run a command under the seccomp rules of systemd's MemoryDenyWriteExecute=yes.

    python tests/seccomp_mdwe.py COMMAND [ARGS...]

Why: the unit sets MemoryDenyWriteExecute=yes, which breaks any library that generates code
at run time (JITs). The tests run the real reader under the same rules, with no systemd
needed. The rules are systemd's (src/shared/seccomp-util.c, seccomp_memory_deny_write_execute):
EPERM for mmap with PROT_WRITE|PROT_EXEC, for mprotect/pkey_mprotect adding PROT_EXEC, and for
shmat with SHM_EXEC. Loaded through libseccomp (a dependency of systemd itself) via ctypes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
_ALLOW = 0x7FFF0000
_ERRNO = 0x00050000
_CMP_MASKED_EQ = 7


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


def install() -> None:
    """Load the filter into this process (inherited by everything it execs)."""
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp") or "libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")

    def deny(syscall: str, arg: int, mask: int) -> None:
        nr = lib.seccomp_syscall_resolve_name(syscall.encode())
        if nr < 0:  # e.g. mmap2 exists on 32-bit ARM only
            return
        cmp = _ArgCmp(arg, _CMP_MASKED_EQ, mask, mask)
        rc = lib.seccomp_rule_add_array(ctx, _ERRNO | errno.EPERM, nr, 1, ctypes.byref(cmp))
        if rc != 0:
            raise OSError(-rc, f"seccomp rule for {syscall}")

    deny("mmap", 2, PROT_WRITE | PROT_EXEC)
    deny("mmap2", 2, PROT_WRITE | PROT_EXEC)
    deny("mprotect", 2, PROT_EXEC)
    deny("pkey_mprotect", 2, PROT_EXEC)
    deny("shmat", 2, SHM_EXEC)
    rc = lib.seccomp_load(ctx)  # sets no_new_privs first, as systemd does
    if rc != 0:
        raise OSError(-rc, "seccomp_load")


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
