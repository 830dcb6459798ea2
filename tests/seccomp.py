"""Run a command under a real seccomp filter that makes userfaultfd(2) fail.

    python tests/seccomp.py ENOSYS -- CMD ARGS...

The filter is a classic BPF program installed with prctl(PR_SET_SECCOMP) after
PR_SET_NO_NEW_PRIVS, then the command is exec'd, so it and its children inherit it: the way
container runtimes and systemd's SystemCallFilter deny a syscall.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
NR = {"x86_64": 323, "aarch64": 282}
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(err: int) -> None:
    arch = platform.machine()
    insns = [
        (BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        (BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
        (BPF_JEQ_K, 0, 1, NR[arch]),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err),
        (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    raw = b"".join(struct.pack("<HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = SockFprog(len(insns), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def command(err_name: str, cmd: list[str]) -> list[str]:
    """The argv that runs ``cmd`` under a filter returning ``err_name`` for userfaultfd."""
    return [sys.executable, os.path.abspath(__file__), err_name, "--", *cmd]


if __name__ == "__main__":
    name, sep, *argv = sys.argv[1:]
    assert sep == "--" and argv, __doc__
    install(getattr(errno, name))
    os.execvp(argv[0], argv)
