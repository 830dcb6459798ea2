"""Become the caller that matters: another process's identity, or a user's fresh login.

`probe --pid PID` asks the kernel, not a guess: a forked child takes on the process's user and
mount namespaces (setns), its uids and gids, its capability sets, no_new_privs and its seccomp
filters (copied with ptrace's PTRACE_SECCOMP_GET_FILTER, kernel/seccomp.c
seccomp_get_filter(): root, CONFIG_CHECKPOINT_RESTORE, the target stopped for the copy),
installed oldest first as the kernel ran them, and then runs the same probe.  `probe --user`
does the same for a user: its groups (initgroups) and no capabilities.

Whatever cannot be copied is said, with what the answer then rests on instead: this module
returns the list of what was copied and of what was inferred, never a silent guess.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pickle
import pwd
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from . import errors, procfs
from .output import inert

if TYPE_CHECKING:
    from .probe import ProbeReport

_libc = ctypes.CDLL(None, use_errno=True)
_libc.ptrace.restype = ctypes.c_long
_libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
_libc.prctl.restype = ctypes.c_int
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.setns.restype = ctypes.c_int
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.capset.restype = ctypes.c_int
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

# include/uapi/linux/ptrace.h, prctl.h, sched.h, capability.h, seccomp.h, filter.h
PTRACE_DETACH, PTRACE_SEIZE, PTRACE_INTERRUPT = 17, 0x4206, 0x4207
PTRACE_SECCOMP_GET_FILTER = 0x420C  # 4.4, CONFIG_CHECKPOINT_RESTORE
PR_SET_KEEPCAPS, PR_SET_SECCOMP, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 8, 22, 24, 38
SECCOMP_MODE_FILTER = 2
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
LINUX_CAPABILITY_VERSION_3 = 0x20080522
CAP_SYS_ADMIN = 21
SECCOMP_RET_ACTION_FULL = 0xFFFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000  # 5.0: a supervisor answers the call
BPF_RET = 0x06
SOCK_FILTER = struct.Struct("<HBBI")  # struct sock_filter: code, jt, jf, k
WALL = 0x40000000  # __WALL: wait for a seized thread that is not our child


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


@dataclass
class Identity:
    """Who a process is, as the kernel checks it for userfaultfd (and what it may open)."""

    pid: int | None
    name: str  # "pid 4242 (qemu-system-x86)" or "user qemu"
    uid: int  # effective uid, in the initial user namespace
    gid: int
    groups: list[int]
    caps: dict[str, int] = field(default_factory=dict)  # Inh, Prm, Eff, Bnd, Amb
    no_new_privs: bool = False
    seccomp: int = 0  # 0 none, 1 strict, 2 filter
    seccomp_filters: int = 0
    userns_is_initial: bool = True
    ruid: int = -1
    rgid: int = -1


@dataclass
class Adoption:
    """What the child really took on, and what the answer rests on where it could not."""

    copied: list[str] = field(default_factory=list)
    inferred: list[str] = field(default_factory=list)


# ----- reading who a process is ------------------------------------------------------------------

def _status(pid: int) -> dict[str, str]:
    with procfs.reading(pid, "the status (/proc/PID/status)"):
        return procfs.status_fields(pid)


def process_identity(pid: int) -> Identity:
    """/proc/PID/status, with the same causes and statuses as `inspect` for bad pids."""
    if pid <= 0:
        raise errors.UffdctlError(f"{pid} is not a process id", "give a pid greater than 0",
                                  errors.USAGE)
    stat = procfs.user_process(pid)
    st = _status(pid)

    def ids(key: str) -> list[int]:
        return [int(v) for v in st.get(key, "").split()]
    uids, gids = ids("Uid"), ids("Gid")
    if len(uids) < 2 or len(gids) < 2:
        raise procfs.gone(pid)
    caps = {k: int(st.get(f"Cap{k}", "0"), 16) for k in ("Inh", "Prm", "Eff", "Bnd", "Amb")}
    return Identity(pid, f"pid {pid} ({inert(stat.comm)})", uids[1], gids[1],
                    ids("Groups"), caps, st.get("NoNewPrivs", "0") == "1",
                    int(st.get("Seccomp", "0")), int(st.get("Seccomp_filters", "0") or 0),
                    procfs.initial_userns(pid) is not False, uids[0], gids[0])


def user_identity(user: str) -> Identity:
    """A user as a fresh login would be: its primary and supplementary groups, no
    capabilities, no seccomp filter."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, OverflowError):
        raise errors.UffdctlError(f"no user {user!r} in the password database",
                                  "give a user name or uid that `getent passwd` lists",
                                  errors.USAGE) from None
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    return Identity(None, f"user {entry.pw_name} (uid {entry.pw_uid})", entry.pw_uid,
                    entry.pw_gid, groups, dict.fromkeys(("Inh", "Prm", "Eff", "Amb"), 0)
                    | {"Bnd": _own_caps()["Bnd"]}, False, 0, 0, True, entry.pw_uid,
                    entry.pw_gid)


def _own_caps() -> dict[str, int]:
    return {key[3:]: int(value, 16) for key, value in procfs.status_fields().items()
            if key.startswith("Cap")}


def _map(pid: int, kind: str, kernel_id: int) -> int | None:
    """A kernel (initial-namespace) id as the process's own user namespace sees it."""
    try:
        with open(f"/proc/{pid}/{kind}_map") as f:
            for line in f:
                inside, outside, count = (int(v) for v in line.split())
                if outside <= kernel_id < outside + count:
                    return kernel_id - outside + inside
    except (OSError, ValueError):
        pass
    return None


# ----- seccomp filters ---------------------------------------------------------------------------

def seccomp_filters(pid: int) -> tuple[list[bytes], str]:
    """The process's seccomp filters, oldest first, and '' ; or [] and why they could not be
    copied.  The thread is stopped (PTRACE_SEIZE + PTRACE_INTERRUPT) only for the copy."""
    if _libc.ptrace(PTRACE_SEIZE, pid, None, None) != 0:
        err = ctypes.get_errno()
        return [], f"ptrace cannot attach to it ({errno.errorcode.get(err, err)})"
    try:
        if _libc.ptrace(PTRACE_INTERRUPT, pid, None, None) != 0:
            return [], "ptrace cannot stop it"
        os.waitpid(pid, WALL)
        found: list[bytes] = []
        for index in range(4096):
            count = _libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(index), None)
            if count < 0:
                err = ctypes.get_errno()
                if err == errno.ENOENT:
                    break  # past the oldest filter
                if err == errno.EINVAL and index == 0:
                    return [], ("this kernel has no PTRACE_SECCOMP_GET_FILTER (built without "
                                "CONFIG_CHECKPOINT_RESTORE)")
                return [], f"PTRACE_SECCOMP_GET_FILTER failed ({errno.errorcode.get(err, err)})"
            buf = ctypes.create_string_buffer(count * SOCK_FILTER.size)
            if _libc.ptrace(PTRACE_SECCOMP_GET_FILTER, pid, ctypes.c_void_p(index),
                            ctypes.cast(buf, ctypes.c_void_p)) < 0:
                return [], "PTRACE_SECCOMP_GET_FILTER failed while copying"
            found.append(buf.raw)
        found.reverse()  # index 0 is the newest; the kernel runs them all, newest first
        return found, ""
    finally:
        _libc.ptrace(PTRACE_DETACH, pid, None, None)


def uses_user_notification(program: bytes) -> bool:
    """A filter that hands calls to a supervisor (SECCOMP_RET_USER_NOTIF): installed in a
    child without that supervisor, the call would wait forever."""
    for i in range(0, len(program), SOCK_FILTER.size):
        code, _jt, _jf, k = SOCK_FILTER.unpack_from(program, i)
        if code & 0x07 == BPF_RET and k & SECCOMP_RET_ACTION_FULL == SECCOMP_RET_USER_NOTIF:
            return True
    return False


# ----- becoming it -------------------------------------------------------------------------

def _mapped(value: int | None, default: int) -> int:
    return default if value is None else value


def _check(ok: int, what: str) -> None:
    if ok != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _capset(eff: int, prm: int, inh: int) -> None:
    header = struct.pack("<Ii", LINUX_CAPABILITY_VERSION_3, 0)
    data = struct.pack("<IIIIII", eff & 0xFFFFFFFF, prm & 0xFFFFFFFF, inh & 0xFFFFFFFF,
                       eff >> 32, prm >> 32, inh >> 32)
    hbuf, dbuf = ctypes.create_string_buffer(header), ctypes.create_string_buffer(data)
    _check(_libc.capset(hbuf, dbuf), "capset")


def _install(program: bytes) -> None:
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // SOCK_FILTER.size, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0),
           "installing a seccomp filter")


def _become(ident: Identity, ns_fds: dict[str, int], filters: list[bytes],
            adoption: Adoption) -> None:
    """In the forked child: namespaces, ids, capabilities, no_new_privs, filters, in the
    order the kernel allows (user namespace first: it grants what the rest needs)."""
    if "user" in ns_fds:
        _check(_libc.setns(ns_fds["user"], CLONE_NEWUSER), "setns(user)")
    if "mnt" in ns_fds:
        _check(_libc.setns(ns_fds["mnt"], CLONE_NEWNS), "setns(mnt)")
        os.chdir("/")
    pid = ident.pid
    uid, gid = ident.uid, ident.gid
    groups = list(ident.groups)
    if pid is not None and not ident.userns_is_initial:
        uid = _mapped(_map(pid, "uid", ident.uid), uid)
        gid = _mapped(_map(pid, "gid", ident.gid), gid)
        groups = [g for g in (_map(pid, "gid", k) for k in ident.groups) if g is not None]
    bounding = ident.caps.get("Bnd", 0)
    for cap in range(64):
        if (not bounding >> cap & 1 and _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                and ctypes.get_errno() == errno.EINVAL):
            break  # past the last capability this kernel knows
    _check(_libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "PR_SET_KEEPCAPS")
    try:
        os.setgroups(groups)
    except OSError:
        adoption.inferred.append("supplementary groups: not settable in its user namespace "
                                 "(setgroups denied); the device node's group check uses "
                                 "its primary group only")
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _capset(ident.caps.get("Eff", 0), ident.caps.get("Prm", 0), ident.caps.get("Inh", 0))
    adoption.copied.append(f"uid {ident.uid}, gid {ident.gid}, groups, capability sets")
    if ident.no_new_privs:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
        adoption.copied.append("no_new_privs")
    if filters:
        if not ident.no_new_privs and not ident.caps.get("Eff", 0) >> CAP_SYS_ADMIN & 1:
            # Installing a filter needs one of the two (kernel/seccomp.c); no_new_privs
            # changes only what execve() may gain, nothing userfaultfd checks.
            _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
        for program in filters:
            _install(program)
        adoption.copied.append(f"{len(filters)} seccomp filter(s)")


def _preload() -> None:
    """Import, before the child changes user and mount namespace, everything the probe
    imports lazily: afterwards the interpreter's files may be unreadable (a venv under
    /root for uid 107) or absent (a container's own root file system)."""
    import difflib  # noqa: F401
    import zlib  # noqa: F401

    from . import advice, hugepages, kconfig, probe, require  # noqa: F401
    from .render import documents  # noqa: F401


T = TypeVar("T")


def run_as(ident: Identity, work: Callable[[], T]) -> tuple[T, Adoption]:
    """Fork, become ``ident`` in the child, run ``work`` there and bring its result back
    (pickled: the child is this program's own fork, so what comes back is ours)."""
    adoption = Adoption()
    if os.geteuid() != 0:
        raise errors.UffdctlError(
            f"taking on the identity of {ident.name} needs root (setns, setuid, ptrace)",
            "run `uffdctl probe --pid/--user` as root", errors.NO_ACCESS)
    ns_fds: dict[str, int] = {}
    filters: list[bytes] = []
    if ident.pid is not None:
        for ns in ("user", "mnt"):
            try:
                if os.readlink(f"/proc/{ident.pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"):
                    ns_fds[ns] = os.open(f"/proc/{ident.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise procfs.error(ident.pid, exc, f"its {ns} namespace") from None
        if ns_fds:
            adoption.copied.append("its " + " and ".join(
                {"user": "user", "mnt": "mount"}[n] for n in ns_fds) + " namespace")
        if ident.seccomp == 2:
            filters, why = seccomp_filters(ident.pid)
            if why:
                adoption.inferred.append(
                    f"seccomp: {ident.seccomp_filters} filter(s) not copied ({why}); the "
                    "answer is what the kernel says without them, so a syscall the filters "
                    "deny may be shown as working")
            elif any(uses_user_notification(p) for p in filters):
                adoption.inferred.append(
                    "seccomp: a filter hands calls to a supervisor (user notification); "
                    "not installed, so what that supervisor answers is not known")
                filters = []
    _preload()

    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # the child: never returns
        status = 0
        try:
            os.close(read_fd)
            _become(ident, ns_fds, filters, adoption)
            doc: dict[str, object] = {"result": work(), "adoption": adoption}
        except errors.UffdctlError as exc:  # the probe's own refusal: the parent reports it
            doc = {"refused": exc, "adoption": adoption}
        except BaseException as exc:  # reported to the parent, which owns the exit status
            doc = {"error": f"{type(exc).__name__}: {exc}", "adoption": adoption}
            status = 1
        data = pickle.dumps(doc)
        view = memoryview(data)
        while view:
            view = view[os.write(write_fd, view):]
        os._exit(status)
    os.close(write_fd)
    for fd in ns_fds.values():
        os.close(fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(1 << 16):
            chunks.append(chunk)
    _, wstatus = os.waitpid(child, 0)
    if os.WIFSIGNALED(wstatus):
        raise errors.UffdctlError(
            f"the probe in the identity of {ident.name} was killed by signal "
            f"{os.WTERMSIG(wstatus)} (a seccomp filter that kills?)",
            "read its seccomp profile", errors.UNAVAILABLE)
    raw = b"".join(chunks)
    if not raw:
        raise errors.UffdctlError(
            f"the probe in the identity of {ident.name} ended without an answer (exit "
            f"status {os.WEXITSTATUS(wstatus)})", "run it again; if it persists, report it",
            errors.UNAVAILABLE)
    answer: dict[str, Any] = pickle.loads(raw)  # our own child's answer
    if "error" in answer:
        raise errors.UffdctlError(
            f"could not take on the identity of {ident.name}: {answer['error']}",
            "run as root in the initial namespaces", errors.NO_ACCESS)
    if "refused" in answer:
        raise answer["refused"]
    return answer["result"], answer["adoption"]


# ----- the probe, as someone else ----------------------------------------------------------------

def identity(pid: int | None, user: str | None) -> Identity:
    """The identity `probe --pid PID` or `--user NAME|UID` stands for."""
    return process_identity(pid) if pid is not None else user_identity(user or "")


def probe_as(ident: Identity, check_ioctls: bool = True) -> ProbeReport:
    """The probe run by a child that has become ``ident``, with report.caller saying who and
    how; UffdctlError as `inspect` gives for a bad pid, or when this process is not root."""
    from . import probe

    report, adoption = run_as(ident, lambda: probe.run_probe(check_ioctls))
    report.caller = probe.Caller(ident.name, ident.pid, ident.uid, ident.gid, ident.groups,
                           ident.caps.get("Eff", 0), ident.no_new_privs, ident.seccomp,
                           ident.seccomp_filters, ident.userns_is_initial, adoption.copied,
                           adoption.inferred)
    return report
