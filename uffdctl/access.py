"""How this process may open a userfaultfd, tried for real, and why not where it can't.

Three ways exist (abi.OPEN_METHODS, fs/userfaultfd.c): the syscall; /dev/userfaultfd (6.1),
where the file mode is the only check; and the syscall with UFFD_USER_MODE_ONLY (5.11), which
an unprivileged process may use with vm.unprivileged_userfaultfd=0 but which cannot handle
faults raised by the kernel itself.  Each refusal is
explained by its real cause: the same errno means different things under a seccomp filter,
in a child user namespace, or with the sysctl at 0.
"""

from __future__ import annotations

import errno
import os
import platform
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from . import abi, errors, kconfig
from .uffd import UffdError, Userfaultfd, open_with

SYSCALL, DEV, USER_MODE_ONLY = (m.name for m in abi.OPEN_METHODS)


@dataclass
class DevNode:
    """/dev/userfaultfd (6.1+) as this process sees it."""

    exists: bool
    mode: str = ""  # e.g. "0600"
    uid: int = -1
    gid: int = -1
    accessible: bool = False  # access(R_OK|W_OK) for this process


@dataclass
class Context:
    """What decides whether this process may open a userfaultfd."""

    uid: int
    euid: int
    cap_sys_ptrace: bool
    initial_userns: bool | None  # None: could not tell
    sysctl: int | None  # vm.unprivileged_userfaultfd; None: absent (< 5.2) or unreadable
    seccomp: int | None  # 0 none, 1 strict, 2 filter; None: unknown
    seccomp_filters: int | None
    dev: DevNode
    config_userfaultfd: str | None  # "y", "n" or None when no kernel config is readable
    release: str = ""  # the running kernel's release: which methods it knows


@dataclass
class Method:
    """One way to open a userfaultfd, tried for real, and why it failed."""

    name: str
    ok: bool
    errno: str | None = None
    cause: str = ""
    fix: str = ""
    kernel_faults: bool = True  # can faults raised inside syscalls be handled?


@dataclass
class AccessReport:
    """The context and every way to open a userfaultfd."""

    context: Context
    methods: list[Method] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return any(m.ok for m in self.methods)

    def method(self, name: str) -> Method | None:
        return next((m for m in self.methods if m.name == name), None)

    def summary(self) -> tuple[str, str]:
        """(cause, fix) of the most telling refusal, for one-line error messages."""
        syscall = self.method(SYSCALL)
        first = syscall if syscall and not syscall.ok else next(
            (m for m in self.methods if not m.ok), None)
        if first is None:
            return "", ""
        return first.cause, first.fix


# ----- context ------------------------------------------------------------------------------

def _status_fields() -> dict[str, str]:
    out = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text, base) if text is not None else None
    except ValueError:
        return None


def _initial_userns() -> bool | None:
    # In the initial user namespace uid_map is the identity over the whole range.
    try:
        with open("/proc/self/uid_map") as f:
            rows = [line.split() for line in f if line.strip()]
    except OSError:
        return None
    return rows == [["0", "0", "4294967295"]]


def _read_sysctl() -> int | None:
    try:
        with open(abi.SYSCTL_UNPRIVILEGED) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def _dev_node() -> DevNode:
    try:
        st = os.stat(abi.DEV_USERFAULTFD)
    except OSError:
        return DevNode(False)
    return DevNode(True, f"{stat.S_IMODE(st.st_mode):04o}", st.st_uid, st.st_gid,
                   os.access(abi.DEV_USERFAULTFD, os.R_OK | os.W_OK))


def read_context() -> Context:
    status = _status_fields()
    cap_eff = _int(status.get("CapEff"), 16) or 0
    cfg = kconfig.read()
    return Context(
        uid=os.getuid(), euid=os.geteuid(),
        cap_sys_ptrace=bool(cap_eff >> abi.CAP_SYS_PTRACE & 1),
        initial_userns=_initial_userns(), sysctl=_read_sysctl(),
        seccomp=_int(status.get("Seccomp")), seccomp_filters=_int(status.get("Seccomp_filters")),
        dev=_dev_node(), config_userfaultfd=cfg.values["CONFIG_USERFAULTFD"] if cfg else None,
        release=platform.release())


# ----- explaining refusals ------------------------------------------------------------------

def _filtered(ctx: Context) -> bool:
    return ctx.seccomp == 2 or bool(ctx.seccomp_filters)


def _seccomp_words(ctx: Context) -> str:
    n = ctx.seccomp_filters
    return "a seccomp filter" + (f" ({n} installed)" if n else "")


SECCOMP_FIX = ("allow the userfaultfd syscall in the container's or service's seccomp profile, "
               "or run outside that sandbox")


def explain(method: str, err: int, ctx: Context) -> tuple[str, str]:
    """(cause, fix) for a refusal of one method, from errno and the process's context."""
    name = errno.errorcode.get(err, str(err))
    if method == DEV:
        if err == errno.ENOENT:
            first = abi.OPEN_METHOD_BY_NAME[DEV].first
            if ctx.release and not abi.release_at_least(ctx.release, first):
                # Nothing to do about it on this kernel: the other methods are the way.
                return (f"kernel {ctx.release} has no /dev/userfaultfd (added in {first})", "")
            return ("no /dev/userfaultfd node (no devtmpfs on /dev, or a kernel without "
                    "CONFIG_USERFAULTFD)",
                    "mount devtmpfs on /dev (the kernel creates the node there), or use the "
                    "syscall")
        if err in (errno.EACCES, errno.EPERM):
            node = ctx.dev
            return (f"/dev/userfaultfd is mode {node.mode} owned by uid {node.uid} gid "
                    f"{node.gid}; this process (uid {ctx.euid}) may not open it",
                    "grant access with a udev rule (e.g. GROUP=\"kvm\", MODE=\"0660\"); whoever "
                    "opens it may handle kernel faults: sysctl and CAP_SYS_PTRACE are not "
                    "consulted")
        return f"open /dev/userfaultfd failed: {name}", ""
    if err == errno.ENOSYS:
        if _filtered(ctx) and ctx.config_userfaultfd != "n":
            return (f"{_seccomp_words(ctx)} denies userfaultfd (ENOSYS)" +
                    (", the kernel has CONFIG_USERFAULTFD=y" if ctx.config_userfaultfd == "y"
                     else ""), SECCOMP_FIX)
        if ctx.config_userfaultfd == "n":
            return ("the kernel is built without CONFIG_USERFAULTFD",
                    "use a kernel with CONFIG_USERFAULTFD=y")
        return ("the kernel has no userfaultfd syscall (no CONFIG_USERFAULTFD, or older than "
                "4.3)", "use a kernel with CONFIG_USERFAULTFD=y")
    if err == errno.EINVAL and method == USER_MODE_ONLY:
        return ("UFFD_USER_MODE_ONLY is not known to this kernel (added in 5.11)",
                "use the syscall with CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1")
    if err == errno.EPERM:
        return _explain_eperm(method, ctx)
    return f"userfaultfd failed: {name} ({os.strerror(err)})", ""


def _knows_user_mode_only(ctx: Context) -> bool:
    return abi.release_at_least(ctx.release, abi.OPEN_METHOD_BY_NAME[USER_MODE_ONLY].first)


def _explain_eperm(method: str, ctx: Context) -> tuple[str, str]:
    """The syscall refused with EPERM.  From 5.11 the kernel lets anyone use
    UFFD_USER_MODE_ONLY and lets a permitted caller (CAP_SYS_PTRACE in the initial user
    namespace, or vm.unprivileged_userfaultfd=1) do anything, so an EPERM there comes from a
    seccomp filter.  Before 5.11 the flag does not exist, and the kernel checks permission
    before it looks at the flags (fs/userfaultfd.c, 5.10: the sysctl check comes first), so
    an unprivileged caller gets EPERM for it too."""
    knows_umo = _knows_user_mode_only(ctx)
    permitted = ctx.sysctl == 1 or (ctx.cap_sys_ptrace and ctx.initial_userns is not False)
    if _filtered(ctx) and (permitted or (method == USER_MODE_ONLY and knows_umo)):
        return f"{_seccomp_words(ctx)} denies userfaultfd (EPERM)", SECCOMP_FIX
    sysctl = ctx.sysctl if ctx.sysctl is not None else "unreadable"
    if ctx.cap_sys_ptrace and ctx.initial_userns is False:
        cause = ("CAP_SYS_PTRACE counts only in the initial user namespace and this process "
                 f"is in a child namespace; vm.unprivileged_userfaultfd is {sysctl}")
    else:
        cause = f"vm.unprivileged_userfaultfd is {sysctl} and this process lacks CAP_SYS_PTRACE"
    if method == USER_MODE_ONLY and not knows_umo:
        first = abi.OPEN_METHOD_BY_NAME[USER_MODE_ONLY].first
        cause = (f"kernel {ctx.release} predates UFFD_USER_MODE_ONLY ({first}) and checks "
                 f"permission before flags: {cause}")
    seccomp_too = ""
    if _filtered(ctx):
        # Both refuse, and the errno cannot say which answered first.
        cause += f"; {_seccomp_words(ctx)} may deny userfaultfd as well"
        seccomp_too = "; if the seccomp filter denies it too, " + SECCOMP_FIX
    alternatives = []
    if knows_umo and method != USER_MODE_ONLY:
        alternatives.append("UFFD_USER_MODE_ONLY (user-mode faults only: a syscall touching a "
                            "registered page fails with EFAULT instead of being handled)")
    if ctx.dev.accessible:
        alternatives.append("/dev/userfaultfd")
    fix = "run `sysctl vm.unprivileged_userfaultfd=1` as root, or give the process " \
          "CAP_SYS_PTRACE"
    fix = ("use " + " or ".join(alternatives) + ", or " + fix) if alternatives else fix
    return cause, fix + seccomp_too


# ----- trying for real ----------------------------------------------------------------------

def _try(method: abi.OpenMethod, ctx: Context) -> Method:
    try:
        fd = open_with(method)
    except UffdError as exc:
        err = exc.errno or errno.EIO
        cause, fix = explain(method.name, err, ctx)
        return Method(method.name, False, errno.errorcode.get(err, str(err)), cause, fix,
                      method.kernel_faults)
    os.close(fd)
    return Method(method.name, True, kernel_faults=method.kernel_faults)


def diagnose() -> AccessReport:
    """Every way to open a userfaultfd, tried in the order of preference."""
    ctx = read_context()
    return AccessReport(ctx, [_try(m, ctx) for m in abi.OPEN_METHODS])


def opener(name: str, nonblock: bool = True) -> Callable[[], Userfaultfd]:
    """A function that opens a fresh userfaultfd the named way (UFFDIO_API is once per fd, so
    the probe opens many)."""
    method = abi.OPEN_METHOD_BY_NAME[name]
    return lambda: Userfaultfd(open_with(method, nonblock))


def open_uffd(nonblock: bool = True, kernel_faults: bool = False) -> tuple[Userfaultfd, str]:
    """The first userfaultfd that opens, in the order of abi.OPEN_METHODS, and how it was
    opened; with ``kernel_faults`` only methods whose descriptors handle kernel-mode faults.
    Raises UffdctlError (UNAVAILABLE) with the diagnosed cause when none works."""
    first_error: tuple[str, int] | None = None
    for method in abi.OPEN_METHODS:
        if kernel_faults and not method.kernel_faults:
            continue
        try:
            return Userfaultfd(open_with(method, nonblock)), method.name
        except UffdError as exc:
            if first_error is None:
                first_error = (method.name, exc.errno or errno.EIO)
    assert first_error is not None
    cause, fix = explain(first_error[0], first_error[1], read_context())
    raise errors.UffdctlError(f"cannot open a userfaultfd: {cause}", fix, errors.UNAVAILABLE)
