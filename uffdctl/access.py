"""How this process may open a userfaultfd, tried for real, and why not where it can't.

Three ways exist (facts §5): the syscall; the syscall with UFFD_USER_MODE_ONLY (5.11), which
an unprivileged process may always use but which cannot handle faults raised by the kernel
itself; and /dev/userfaultfd (6.1), where the file mode is the only check.  Each refusal is
explained by its real cause: the same errno means different things under a seccomp filter,
in a child user namespace, or with the sysctl at 0.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from dataclasses import dataclass, field

from . import abi, errors
from .uffd import UffdError, Userfaultfd, open_dev_userfaultfd, open_userfaultfd

SYSCALL = "syscall"
USER_MODE_ONLY = "syscall+user-mode-only"
DEV = "/dev/userfaultfd"


@dataclass
class DevNode:
    """/dev/userfaultfd (5.11+) as this process sees it."""

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
    config_userfaultfd: str | None  # "y", "n" or None when /proc/config.gz is unreadable


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


@functools.cache
def _config_text() -> str | None:
    """/proc/config.gz, read once per process."""
    import zlib

    try:
        with open("/proc/config.gz", "rb") as f:
            # One decompression of the whole file: reading it line by line through gzip.open
            # costs milliseconds, the start-up budget of `probe --json`.
            return "\n" + zlib.decompress(f.read(), 16 + zlib.MAX_WBITS).decode("utf-8",
                                                                                "replace")
    except (OSError, zlib.error):
        return None


def kconfig(symbols: tuple[str, ...]) -> dict[str, str] | None:
    """Values of the given CONFIG_ symbols from /proc/config.gz ("n" when unset); None when
    the kernel does not expose its config."""
    text = _config_text()
    if text is None:
        return None
    found = {}
    for symbol in symbols:
        at = text.find(f"\n{symbol}=")
        if at < 0:
            found[symbol] = "n"  # "# CONFIG_X is not set", or not there at all
        else:
            start = at + len(symbol) + 2
            end = text.find("\n", start)
            found[symbol] = text[start:None if end < 0 else end].strip()
    return found


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
    cfg = kconfig(("CONFIG_USERFAULTFD",))
    return Context(
        uid=os.getuid(), euid=os.geteuid(),
        cap_sys_ptrace=bool(cap_eff >> abi.CAP_SYS_PTRACE & 1),
        initial_userns=_initial_userns(), sysctl=_read_sysctl(),
        seccomp=_int(status.get("Seccomp")), seccomp_filters=_int(status.get("Seccomp_filters")),
        dev=_dev_node(), config_userfaultfd=cfg["CONFIG_USERFAULTFD"] if cfg else None)


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
            return ("no /dev/userfaultfd (kernel older than 6.1, or no devtmpfs)",
                    "use the syscall, or a 6.1+ kernel")
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
        if method == USER_MODE_ONLY or (_filtered(ctx) and (
                ctx.sysctl == 1 or (ctx.cap_sys_ptrace and ctx.initial_userns is not False))):
            # The kernel never refuses user-mode-only, nor a permitted caller: a filter did.
            return f"{_seccomp_words(ctx)} denies userfaultfd (EPERM)", SECCOMP_FIX
        alternatives = ["UFFD_USER_MODE_ONLY (user-mode faults only: a syscall touching a "
                        "registered page fails with EFAULT instead of being handled)"]
        if ctx.dev.accessible:
            alternatives.append("/dev/userfaultfd")
        if ctx.cap_sys_ptrace and ctx.initial_userns is False:
            cause = ("CAP_SYS_PTRACE counts only in the initial user namespace and this process "
                     "is in a child namespace; vm.unprivileged_userfaultfd is "
                     f"{ctx.sysctl if ctx.sysctl is not None else 'unreadable'}")
        else:
            cause = (f"vm.unprivileged_userfaultfd is "
                     f"{ctx.sysctl if ctx.sysctl is not None else 'unreadable'} and this "
                     "process lacks CAP_SYS_PTRACE")
        return (cause, "use " + " or ".join(alternatives) +
                ", or run `sysctl vm.unprivileged_userfaultfd=1` as root")
    return f"userfaultfd failed: {name} ({os.strerror(err)})", ""


# ----- trying for real ----------------------------------------------------------------------

_FLAGS = abi.O_CLOEXEC | abi.O_NONBLOCK


def _try(name: str, ctx: Context) -> Method:
    try:
        if name == DEV:
            fd = open_dev_userfaultfd(_FLAGS)
        elif name == USER_MODE_ONLY:
            fd = open_userfaultfd(_FLAGS | abi.UFFD_USER_MODE_ONLY)
        else:
            fd = open_userfaultfd(_FLAGS)
    except UffdError as exc:
        err = exc.errno or errno.EIO
        cause, fix = explain(name, err, ctx)
        return Method(name, False, errno.errorcode.get(err, str(err)), cause, fix,
                      name != USER_MODE_ONLY)
    os.close(fd)
    return Method(name, True, kernel_faults=name != USER_MODE_ONLY)


def diagnose() -> AccessReport:
    ctx = read_context()
    return AccessReport(ctx, [_try(name, ctx) for name in (SYSCALL, USER_MODE_ONLY, DEV)])


def open_uffd(nonblock: bool = True, user_mode_ok: bool = True) -> tuple[Userfaultfd, str]:
    """The best available userfaultfd and how it was opened.

    Order: the syscall, /dev/userfaultfd, then (when the caller's faults all come from user
    mode) the syscall with UFFD_USER_MODE_ONLY.  Raises UffdctlError (UNAVAILABLE) with the
    diagnosed cause when none works.
    """
    flags = abi.O_CLOEXEC | (abi.O_NONBLOCK if nonblock else 0)
    attempts = [(SYSCALL, lambda: open_userfaultfd(flags)),
                (DEV, lambda: open_dev_userfaultfd(flags))]
    if user_mode_ok:
        attempts.append((USER_MODE_ONLY,
                         lambda: open_userfaultfd(flags | abi.UFFD_USER_MODE_ONLY)))
    first_error: tuple[str, int] | None = None
    for name, opener in attempts:
        try:
            return Userfaultfd(opener()), name
        except UffdError as exc:
            if first_error is None:
                first_error = (name, exc.errno or errno.EIO)
    assert first_error is not None
    cause, fix = explain(first_error[0], first_error[1], read_context())
    raise errors.UffdctlError(f"cannot open a userfaultfd: {cause}", fix, errors.UNAVAILABLE)
