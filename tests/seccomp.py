"""Run a command under a real seccomp filter that makes userfaultfd fail.

    python tests/seccomp.py ENOSYS -- CMD ARGS...            # userfaultfd(2) fails
    python tests/seccomp.py EPERM --deny ioc_new -- CMD ...   # ioctl USERFAULTFD_IOC_NEW fails

The filter is a classic BPF program installed with prctl(PR_SET_SECCOMP) after
PR_SET_NO_NEW_PRIVS, then the command is exec'd, so it and its children inherit it: the way
container runtimes and systemd's SystemCallFilter deny a syscall.  ``ioc_new`` denies ioctl()
with request USERFAULTFD_IOC_NEW (0xaa00) only, the way a profile that allows ioctl by request
number does (the filter sees numbers, never the path of the file the descriptor is for).
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
NR_IOCTL = {"x86_64": 16, "aarch64": 29}
NR_EXECVE = {"x86_64": 59, "aarch64": 221}  # arch/x86/entry/syscalls, asm-generic/unistd.h
USERFAULTFD_IOC_NEW = 0xAA00  # _IO(0xAA, 0x00), include/uapi/linux/userfaultfd.h (6.1)
# struct seccomp_data: nr u32 @0, arch u32 @4, instruction_pointer u64 @8, args u64[6] @16;
# the low half of args[1] (ioctl's request, an unsigned int) at 24 on little-endian.
OFF_NR, OFF_ARCH, OFF_ARG1_LO = 0, 4, 24
BPF_LD_W_ABS, BPF_JEQ_K, BPF_RET_K = 0x20, 0x15, 0x06
TARGETS = ("userfaultfd", "ioc_new", "execve")


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def program(err: int, deny: tuple[str, ...] = ("userfaultfd",)) -> list[tuple[int, int, int, int]]:
    arch = platform.machine()
    deny_ret = (BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err)
    allow = (BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW)
    insns = [
        (BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        (BPF_JEQ_K, 1, 0, AUDIT_ARCH[arch]),
        allow,
        (BPF_LD_W_ABS, 0, 0, OFF_NR),
    ]
    if "userfaultfd" in deny:
        insns += [(BPF_JEQ_K, 0, 1, NR[arch]), deny_ret]
    if "execve" in deny:  # starting any program, as a sandbox for a service may forbid
        insns += [(BPF_JEQ_K, 0, 1, NR_EXECVE[arch]), deny_ret]
    if "ioc_new" in deny:
        insns += [(BPF_JEQ_K, 0, 3, NR_IOCTL[arch]),
                  (BPF_LD_W_ABS, 0, 0, OFF_ARG1_LO),
                  (BPF_JEQ_K, 0, 1, USERFAULTFD_IOC_NEW),
                  deny_ret]
    return [*insns, allow]


def install(err: int, deny: tuple[str, ...] = ("userfaultfd",)) -> None:
    insns = program(err, deny)
    raw = b"".join(struct.pack("<HBBI", *i) for i in insns)
    buf = ctypes.create_string_buffer(raw, len(raw))
    prog = SockFprog(len(insns), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")


def command(err_name: str, cmd: list[str], deny: tuple[str, ...] = ("userfaultfd",)
            ) -> list[str]:
    """The argv that runs ``cmd`` under a filter returning ``err_name`` for each of ``deny``
    ("userfaultfd": the syscall; "ioc_new": ioctl USERFAULTFD_IOC_NEW)."""
    assert deny and set(deny) <= set(TARGETS), deny
    return [sys.executable, os.path.abspath(__file__), err_name, "--deny", ",".join(deny),
            "--", *cmd]


if __name__ == "__main__":
    args = sys.argv[1:]
    name = args.pop(0)
    deny = ("userfaultfd",)
    if args[0] == "--deny":
        deny = tuple(args[1].split(","))
        args = args[2:]
    sep, *argv = args
    assert sep == "--" and argv and set(deny) <= set(TARGETS), __doc__
    install(getattr(errno, name), deny)
    os.execvp(argv[0], argv)
