"""How this process may open a userfaultfd, tried for real, and why not where it can't.

Three ways exist (abi.OPEN_METHODS, fs/userfaultfd.c): the syscall; /dev/userfaultfd (6.1),
where the file mode is the only check; and the syscall with UFFD_USER_MODE_ONLY (5.11), which
an unprivileged process may use with vm.unprivileged_userfaultfd=0 but which cannot handle
faults raised by the kernel itself.  Each refusal is explained by every cause that applies
(a seccomp filter and the sysctl can both deny the same call), worked out from what the
other ways did: from 5.11 the kernel never refuses UFFD_USER_MODE_ONLY, so when that is
refused too, a filter is at work.  The fixes offered are only those the findings do not show
blocked, and the verdict says first whether kernel-mode faults can be had, and how.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import stat
import struct
from collections.abc import Callable

from . import abi, advice, errors, kconfig, procfs
from .records import NamedTuple
from .uffd import UffdError, Userfaultfd, open_with

SYSCALL, DEV, USER_MODE_ONLY = (m.name for m in abi.OPEN_METHODS)

# The device is the misc device "userfaultfd" (fs/userfaultfd.c userfaultfd_misc, 6.1:
# MISC_DYNAMIC_MINOR), registered by misc_register() (drivers/char/misc.c) on MISC_MAJOR 10,
# which makes /sys/class/misc/userfaultfd/dev read "10:MINOR"; the minor differs between
# kernels (10:126 on Debian's 6.1, 10:257 on 6.12).
MISC_MAJOR = 10
SYSFS_USERFAULTFD = "/sys/class/misc/userfaultfd/dev"
CAP_DAC_OVERRIDE = 1  # include/uapi/linux/capability.h
# POSIX ACL as the system.posix_acl_access xattr (include/uapi/linux/posix_acl.h,
# posix_acl_xattr.h): a u32 version 2, then {le16 tag, le16 perm, le32 id} entries.
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
_ACL_ENTRY = struct.Struct("<HHI")
RW = 6  # the permission bits an O_RDWR open needs


# The records here are never changed once made: named tuples, since each dataclass costs
# three exec() calls at import, which every `probe` pays (benchmarks/README.md).
class DevNode(NamedTuple):
    """/dev/userfaultfd (6.1+) as this process sees it."""

    exists: bool
    mode: str = ""  # e.g. "0600"
    uid: int = -1
    gid: int = -1
    accessible: bool = False  # access(R_OK|W_OK) for this process
    kind: str = ""  # "char device", "regular file", "directory", ...
    rdev: str = ""  # "10:257" for a device node
    nodev: bool = False  # on a filesystem mounted nodev: no device there can be opened
    acl: tuple[tuple[int, int, int], ...] = ()  # POSIX ACL entries (tag, perm, id)


class Context(NamedTuple):
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
    egid: int = -1
    gids: tuple[int, ...] = ()  # effective and supplementary groups
    cap_dac_override: bool = False
    # The device's numbers as the kernel registered them ("10:257"); None: no such entry.
    misc_dev: str | None = None


class Denial(NamedTuple):
    """One thing that refuses a way to open a userfaultfd.  ``by`` names it for programs:
    seccomp, seccomp-maybe, seccomp-ioctl, sysctl, kernel, sandbox, old-kernel, no-device,
    no-node, not-device, node-mode, nodev, device-cgroup, lsm, error."""

    by: str
    cause: str
    fix: str = ""


class Method(NamedTuple):
    """One way to open a userfaultfd, tried for real, and why it failed: ``denials`` are the
    causes, each with its fix; ``cause`` and ``fix`` say them in one line (the fix also names
    the other ways that work here).  ``errno`` None on a failure: not tried (a node that is not
    the userfaultfd device is never opened)."""

    name: str
    ok: bool
    errno: str | None = None
    cause: str = ""
    fix: str = ""
    kernel_faults: bool = True  # can faults raised inside syscalls be handled?
    denials: list[Denial] = []  # noqa: RUF012  # one shared empty default: never changed


class Verdict(NamedTuple):
    """The answer first: can this process get kernel-mode faults, and through which way.
    ``method``: the way that serves (kernel-mode first), None when none opens.  ``cause``:
    what refuses the stronger ways, each cause once; ``fix``: what gives kernel-mode faults
    from here ("" when they are there), only fixes the findings do not show blocked."""

    kernel_faults: bool
    method: str | None
    text: str
    cause: str = ""
    fix: str = ""


class AccessReport(NamedTuple):
    """The context and every way to open a userfaultfd."""

    context: Context
    methods: list[Method] = []  # noqa: RUF012  # one shared empty default: never changed

    @property
    def usable(self) -> bool:
        return any(m.ok for m in self.methods)

    def method(self, name: str) -> Method | None:
        return next((m for m in self.methods if m.name == name), None)

    @property
    def verdict(self) -> Verdict:
        return judge(self.methods)

    def summary(self) -> tuple[str, str]:
        """(cause, fix) of the verdict, for one-line error messages."""
        v = self.verdict
        return v.cause, v.fix


# ----- context ------------------------------------------------------------------------------

def _read_sysctl() -> int | None:
    try:
        with open(abi.SYSCTL_UNPRIVILEGED) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


_KINDS = ((stat.S_ISCHR, "char device"), (stat.S_ISREG, "regular file"),
          (stat.S_ISDIR, "directory"), (stat.S_ISBLK, "block device"),
          (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"))


def _acl(path: str) -> tuple[tuple[int, int, int], ...]:
    try:
        raw = os.getxattr(path, "system.posix_acl_access")
    except OSError:
        return ()
    if len(raw) < 4 or struct.unpack_from("<I", raw)[0] != 2:
        return ()
    return tuple(_ACL_ENTRY.unpack_from(raw, off)
                 for off in range(4, len(raw) - _ACL_ENTRY.size + 1, _ACL_ENTRY.size))


def _dev_node(path: str = abi.DEV_USERFAULTFD) -> DevNode:
    try:
        st = os.stat(path)
    except OSError:
        return DevNode(False)
    kind = next((name for test, name in _KINDS if test(st.st_mode)), "file")
    device = stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
    try:
        nodev = bool(os.statvfs(path).f_flag & os.ST_NODEV)
    except OSError:
        nodev = False
    return DevNode(True, f"{stat.S_IMODE(st.st_mode):04o}", st.st_uid, st.st_gid,
                   os.access(path, os.R_OK | os.W_OK), kind,
                   f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}" if device else "",
                   nodev, _acl(path))


def _misc_dev() -> str | None:
    try:
        with open(SYSFS_USERFAULTFD) as f:
            return f.read().strip() or None
    except OSError:
        return None


def read_context() -> Context:
    status = procfs.own_status()
    cap_eff = procfs.status_number(status, "CapEff", 16) or 0
    cfg = kconfig.read()
    return Context(
        uid=os.getuid(), euid=os.geteuid(),
        cap_sys_ptrace=bool(cap_eff >> abi.CAP_SYS_PTRACE & 1),
        initial_userns=procfs.initial_userns(), sysctl=_read_sysctl(),
        seccomp=procfs.status_number(status, "Seccomp"),
        seccomp_filters=procfs.status_number(status, "Seccomp_filters"),
        dev=_dev_node(), config_userfaultfd=cfg.values["CONFIG_USERFAULTFD"] if cfg else None,
        release=abi.release(),
        egid=os.getegid(), gids=tuple(sorted({os.getegid(), *os.getgroups()})),
        cap_dac_override=bool(cap_eff >> CAP_DAC_OVERRIDE & 1),
        misc_dev=_misc_dev())


# ----- who the node is for this process -----------------------------------------------------

class NodeAccess(NamedTuple):
    """Which of the node's permission entries the kernel applies to a process, and the bits
    it grants (4 r, 2 w, 1 x; an ACL's named and group entries already masked)."""

    who: str  # the owner, the owning group, named user u:UID, named group g:GID, others
    bits: int
    group_grants: bool  # the owning group's entry (masked) allows rw


def node_access(dev: DevNode, uid: int, gids: tuple[int, ...]) -> NodeAccess:
    """As the kernel decides it for an open: fs/namei.c acl_permission_check() (owner, then
    the group when the process is in it, then other) and, with an ACL, fs/posix_acl.c
    posix_acl_permission() (owner, a named user entry, the group entries that match, any of
    which may grant, else other), 6.1."""
    mode = int(dev.mode or "0", 8)
    mask = next((p for t, p, _ in dev.acl if t == ACL_MASK), 7)
    group_obj = next((p for t, p, _ in dev.acl if t == ACL_GROUP_OBJ), mode >> 3 & 7)
    group_grants = (group_obj & mask & RW) == RW
    if uid == dev.uid:
        return NodeAccess("the owner", mode >> 6 & 7, group_grants)
    if dev.acl:
        for tag, perm, ident in dev.acl:
            if tag == ACL_USER and ident == uid:
                return NodeAccess(f"named user u:{uid}", perm & mask, group_grants)
        matching = [("the owning group", perm) for tag, perm, _ in dev.acl
                    if tag == ACL_GROUP_OBJ and dev.gid in gids]
        matching += [(f"named group g:{ident}", perm) for tag, perm, ident in dev.acl
                     if tag == ACL_GROUP and ident in gids]
        if matching:
            who, perm = next((m for m in matching if m[1] & mask & RW == RW), matching[0])
            return NodeAccess(who, perm & mask, group_grants)
        return NodeAccess("others", mode & 7, group_grants)
    if dev.gid in gids:
        return NodeAccess("the owning group", mode >> 3 & 7, group_grants)
    return NodeAccess("others", mode & 7, group_grants)


def _rwx(bits: int) -> str:
    return "".join(c if bits & b else "-" for c, b in (("r", 4), ("w", 2), ("x", 1)))


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def _user(uid: int) -> str:
    """The user's name for a command line, or its number (a name from the user database is
    used only when it is a plain word: it lands in a command to paste)."""
    try:
        name = pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return str(uid)
    return name if _NAME.fullmatch(name) else str(uid)


def _group(gid: int) -> str:
    try:
        name = grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return str(gid)
    return name if _NAME.fullmatch(name) else str(gid)


def _own_group(ctx: Context) -> str:
    """The group to give the node to: the process's own (effective) group."""
    gid = ctx.egid if ctx.egid >= 0 else (ctx.gids[0] if ctx.gids else -1)
    return _group(gid) if gid >= 0 else "GROUP"


# ----- is it the userfaultfd device at all ---------------------------------------------------

def _knows(ctx: Context, method: str) -> bool:
    first = abi.OPEN_METHOD_BY_NAME[method].first
    return not ctx.release or abi.release_at_least(ctx.release, first)


def _replace_node(ctx: Context) -> str:
    if ctx.misc_dev:
        return advice.make_node(abi.DEV_USERFAULTFD, ctx.misc_dev, ctx.euid, _own_group(ctx),
                                replace=True)
    return advice.make_node_unknown_numbers(abi.DEV_USERFAULTFD, ctx.euid)


def node_identity(ctx: Context) -> Denial | None:
    """A denial when /dev/userfaultfd is certainly not the userfaultfd device, decided from
    stat() alone: such a node is never opened (an unknown device may act on open: a watchdog
    starts counting)."""
    node, path = ctx.dev, abi.DEV_USERFAULTFD
    if not node.exists:
        return None
    real = (f"the userfaultfd device is char {ctx.misc_dev} (/sys/class/misc/userfaultfd/dev)"
            if ctx.misc_dev else "")
    what = f"{node.kind} {node.rdev}".strip()
    if not _knows(ctx, DEV):
        # Nothing to put there instead: the other ways are this kernel's.
        first = abi.OPEN_METHOD_BY_NAME[DEV].first
        return Denial("not-device", f"{path} is a {what}, but kernel {ctx.release} has no "
                      f"userfaultfd device (added in {first}): it is something else")
    if node.kind != "char device":
        return Denial("not-device", f"{path} is a {what}, not the userfaultfd device"
                      + (f": {real}" if real else ""), _replace_node(ctx))
    if ctx.misc_dev and node.rdev != ctx.misc_dev:
        return Denial("not-device", f"{path} is a char device {node.rdev}, not the userfaultfd "
                      f"device: {real}", _replace_node(ctx))
    if not ctx.misc_dev and not node.rdev.startswith(f"{MISC_MAJOR}:"):
        return Denial("not-device", f"{path} is a char device {node.rdev}, not a misc device "
                      f"(major {MISC_MAJOR}), so not the userfaultfd device",
                      _replace_node(ctx))
    return None


# ----- explaining refusals ------------------------------------------------------------------

class Outcome(NamedTuple):
    """What one way of opening did, before it is explained: ok, or the errno and the step that
    failed ("userfaultfd"; "open" or "ioc_new" for the device); ``refused``: decided without
    trying (node_identity)."""

    name: str
    ok: bool
    errno: int | None = None
    step: str = ""
    refused: Denial | None = None


def _filtered(ctx: Context) -> bool:
    return ctx.seccomp == 2 or bool(ctx.seccomp_filters)


def _seccomp_words(ctx: Context) -> str:
    n = ctx.seccomp_filters
    return "a seccomp filter" + (f" ({n} installed)" if n else "")


def _kernel_allows(ctx: Context) -> bool | None:
    """Would the kernel itself let this process call userfaultfd without
    UFFD_USER_MODE_ONLY?  new_userfaultfd() (fs/userfaultfd.c; userfaultfd_syscall_allowed()
    from 6.2): CAP_SYS_PTRACE in the initial user namespace, or the sysctl at 1; no sysctl
    before 5.2.  None: cannot tell (the sysctl is unreadable)."""
    if ctx.cap_sys_ptrace and ctx.initial_userns is not False:
        return True
    if ctx.sysctl is None:
        return True if ctx.release and not abi.release_at_least(ctx.release, "5.2") else None
    return ctx.sysctl == 1


def _sysctl_denial(ctx: Context, too: bool = False) -> Denial:
    sysctl = ctx.sysctl if ctx.sysctl is not None else "unreadable"
    child = bool(ctx.cap_sys_ptrace and ctx.initial_userns is False)
    if child:
        cause = ("CAP_SYS_PTRACE counts only in the initial user namespace and this process "
                 f"is in a child namespace; vm.unprivileged_userfaultfd is {sysctl}")
    else:
        cause = f"vm.unprivileged_userfaultfd is {sysctl} and this process lacks CAP_SYS_PTRACE"
    if too:
        cause += (", so the kernel refuses it too" if ctx.sysctl is not None
                  else ", so the kernel may refuse it too")
    return Denial("sysctl", cause, advice.allow_unprivileged(child))


def _seccomp_maybe(ctx: Context) -> Denial:
    return Denial("seccomp-maybe", f"{_seccomp_words(ctx)} may deny userfaultfd as well",
                  "where the filter denies it too, " + advice.allow_syscall_in_seccomp())


def _kernel_has_userfaultfd(ctx: Context) -> str:
    """Evidence that the running kernel is built with userfaultfd, or ''."""
    if ctx.config_userfaultfd == "y":
        return "CONFIG_USERFAULTFD=y"
    if ctx.misc_dev:
        return f"its device is registered ({SYSFS_USERFAULTFD})"
    return ""


def _enosys(ctx: Context) -> Denial:
    """ENOSYS from the syscall: a filter, a kernel without it, or a sandbox that answers
    system calls itself (gVisor's Sentry has no userfaultfd and installs no seccomp filter
    the process could see)."""
    if ctx.config_userfaultfd == "n":
        return Denial("kernel", "the kernel is built without CONFIG_USERFAULTFD",
                      advice.kernel_with_userfaultfd())
    if _filtered(ctx):
        has = _kernel_has_userfaultfd(ctx)
        return Denial("seccomp", f"{_seccomp_words(ctx)} denies userfaultfd (ENOSYS)"
                      + (f", the kernel has {has}" if has.startswith("CONFIG") else ""),
                      advice.allow_syscall_in_seccomp())
    has = _kernel_has_userfaultfd(ctx)
    if has:
        return Denial("sandbox", f"the kernel has userfaultfd ({has}), yet the syscall "
                      "answers ENOSYS with no seccomp filter installed: this process runs in "
                      "a sandbox that answers system calls itself without userfaultfd (gVisor "
                      "does)", advice.leave_syscall_sandbox())
    old = ctx.release and not abi.release_at_least(ctx.release, "4.3")
    return Denial("kernel" if old else "sandbox",
                  f"kernel {ctx.release} predates userfaultfd (4.3)" if old else
                  "no userfaultfd syscall here and no seccomp filter installed: the kernel is "
                  "built without CONFIG_USERFAULTFD, or this process runs in a sandbox that "
                  "answers system calls itself without userfaultfd (gVisor does)",
                  advice.kernel_with_userfaultfd() if old else
                  advice.kernel_with_userfaultfd() + "; under gVisor, "
                  + advice.leave_syscall_sandbox())


def _other(err: int, what: str) -> Denial:
    name = errno.errorcode.get(err, str(err))
    return Denial("error", f"{what} failed: {name} ({os.strerror(err)})")


def _syscall_denials(o: Outcome, ctx: Context, umo: Outcome | None) -> list[Denial]:
    """The syscall without flags refused: every cause.  Evidence from the user-mode-only
    call: from 5.11 the kernel lets anyone use UFFD_USER_MODE_ONLY, so when that is refused
    with the same errno under a filter, the filter denies the syscall; when it opens, the
    filter lets the syscall through and only the kernel's own check is left."""
    err = o.errno or errno.EIO
    allows = _kernel_allows(ctx)
    if err == errno.ENOSYS:
        out = [_enosys(ctx)]
        if out[0].by == "seccomp" and allows is False:
            out.append(_sysctl_denial(ctx, too=True))
        return out
    if err == errno.EPERM:
        filtered = _filtered(ctx)
        if allows is True:
            if filtered:
                return [Denial("seccomp", f"{_seccomp_words(ctx)} denies userfaultfd (EPERM)",
                               advice.allow_syscall_in_seccomp())]
            return [Denial("lsm", "refused with EPERM although the kernel's own check lets this "
                           "process through and no seccomp filter is installed: a Linux "
                           "security module may deny it", advice.lsm_audit())]
        if not filtered:
            return [_sysctl_denial(ctx)]
        umo_refused = (umo is not None and not umo.ok and umo.errno == err
                       and _knows(ctx, USER_MODE_ONLY))
        if umo_refused:
            return [Denial("seccomp", f"{_seccomp_words(ctx)} denies userfaultfd (EPERM, with "
                           "UFFD_USER_MODE_ONLY too, which the kernel itself allows anyone)",
                           advice.allow_syscall_in_seccomp()), _sysctl_denial(ctx, too=True)]
        if umo is not None and umo.ok:
            return [_sysctl_denial(ctx)]  # the filter let the user-mode-only call through
        # Both may refuse and the errno cannot say which answered (5.10 refuses the flag for
        # want of permission too, before it looks at it).
        return [_sysctl_denial(ctx), _seccomp_maybe(ctx)]
    if err == errno.EACCES:
        return [Denial("lsm", "a Linux security module refused it (SELinux checks the "
                       "userfaultfd anon inode from 5.12)", advice.lsm_audit())]
    return [_other(err, "userfaultfd")]


def _umo_denials(o: Outcome, ctx: Context) -> list[Denial]:
    err = o.errno or errno.EIO
    first = abi.OPEN_METHOD_BY_NAME[USER_MODE_ONLY].first
    knows = _knows(ctx, USER_MODE_ONLY)
    if err == errno.EINVAL and not knows:
        return [Denial("old-kernel", f"UFFD_USER_MODE_ONLY is not known to kernel "
                       f"{ctx.release} (added in {first}); the syscall without it is the way")]
    if err == errno.EINVAL:
        return [Denial("error", "UFFD_USER_MODE_ONLY refused with EINVAL")]
    if err == errno.ENOSYS:
        return [_enosys(ctx)]
    if err == errno.EPERM:
        if knows:
            if _filtered(ctx):
                return [Denial("seccomp", f"{_seccomp_words(ctx)} denies userfaultfd (EPERM; "
                               f"the kernel itself allows UFFD_USER_MODE_ONLY to anyone from "
                               f"{first})", advice.allow_syscall_in_seccomp())]
            return [Denial("lsm", "refused with EPERM, which the kernel itself never answers "
                           "for UFFD_USER_MODE_ONLY, and no seccomp filter is installed: a "
                           "Linux security module may deny it", advice.lsm_audit())]
        # Before 5.11 the permission check comes before the flags (5.10 new_userfaultfd()).
        old = Denial("old-kernel", f"kernel {ctx.release} predates UFFD_USER_MODE_ONLY "
                     f"({first}) and checks permission before flags")
        if _kernel_allows(ctx) is True:
            return [old, Denial("seccomp", f"{_seccomp_words(ctx)} denies userfaultfd (EPERM)",
                                advice.allow_syscall_in_seccomp())] if _filtered(ctx) else [old]
        out = [old, _sysctl_denial(ctx)]
        if _filtered(ctx):
            out.append(_seccomp_maybe(ctx))
        return out
    if err == errno.EACCES:
        return [Denial("lsm", "a Linux security module refused it", advice.lsm_audit())]
    return [_other(err, "userfaultfd")]


def _dev_denials(o: Outcome, ctx: Context) -> list[Denial]:
    if o.refused is not None:
        return [o.refused]
    err = o.errno or errno.EIO
    node, path = ctx.dev, abi.DEV_USERFAULTFD
    first = abi.OPEN_METHOD_BY_NAME[DEV].first
    if o.step == "ioc_new":
        if err == errno.ENOTTY:
            return [Denial("not-device", f"{path} (char {node.rdev}) does not know "
                           "USERFAULTFD_IOC_NEW: it is not the userfaultfd device",
                           _replace_node(ctx))]
        if _filtered(ctx) and err not in (errno.EINVAL, errno.EMFILE, errno.ENFILE,
                                          errno.ENOMEM):
            # userfaultfd_dev_ioctl() itself answers only EINVAL (another request or flags)
            # or what creating the descriptor fails with: this errno is the filter's.
            return [Denial("seccomp-ioctl", f"{_seccomp_words(ctx)} denies ioctl "
                           f"USERFAULTFD_IOC_NEW (0x{abi.USERFAULTFD_IOC_NEW:x}) on {path} "
                           f"({errno.errorcode.get(err, err)}); opening the node worked",
                           advice.allow_ioctl_in_seccomp(abi.USERFAULTFD_IOC_NEW))]
        if err in (errno.EACCES, errno.EPERM):
            return [Denial("lsm", f"ioctl USERFAULTFD_IOC_NEW on {path} refused with "
                           f"{errno.errorcode[err]} and no seccomp filter is installed: a Linux "
                           "security module may deny it", advice.lsm_audit())]
        return [_other(err, "USERFAULTFD_IOC_NEW")]
    if err == errno.ENOENT:
        if not _knows(ctx, DEV):
            return [Denial("no-device", f"kernel {ctx.release} has no /dev/userfaultfd (added "
                           f"in {first})")]
        if ctx.config_userfaultfd == "n":
            return [Denial("kernel", "the kernel is built without CONFIG_USERFAULTFD",
                           advice.kernel_with_userfaultfd())]
        if ctx.misc_dev:
            return [Denial("no-node", f"no {path} in this /dev, though the kernel has the "
                           f"device (char {ctx.misc_dev}, {SYSFS_USERFAULTFD}): a container's "
                           "/dev, or /dev is not devtmpfs",
                           advice.make_node(path, ctx.misc_dev, ctx.euid, _own_group(ctx),
                                            replace=False))]
        return [Denial("no-node", f"no {path} node (no devtmpfs on /dev, or a kernel without "
                       "CONFIG_USERFAULTFD)",
                       "mount devtmpfs on /dev (the kernel creates the node there)")]
    if err == errno.EACCES:
        access = node_access(node, ctx.euid, ctx.gids)
        overridden = ctx.cap_dac_override and ctx.initial_userns is not False
        if access.bits & RW != RW and not overridden:
            acl = " with an ACL" if node.acl else ""
            return [Denial("node-mode", f"{path} is mode {node.mode} uid {node.uid} gid "
                           f"{node.gid}{acl}: uid {ctx.euid} (groups "
                           f"{' '.join(map(str, ctx.gids)) or 'none'}) gets the permissions of "
                           f"{access.who}, {_rwx(access.bits)}, and opening it needs rw-",
                           advice.node_permission(path, access.who, bool(node.acl), ctx.euid,
                                                  ctx.euid, _user(ctx.euid), _own_group(ctx),
                                                  access.group_grants and node.gid != 0,
                                                  _group(node.gid)))]
        if node.nodev:
            return [Denial("nodev", f"{path} is on a filesystem mounted nodev: no device node "
                           "there can be opened", advice.node_on_nodev(path))]
        return [Denial("lsm", f"its mode lets this process open {path}, yet it is refused "
                       "(EACCES): a Linux security module (SELinux, AppArmor) denies it",
                       advice.lsm_audit())]
    if err == errno.EPERM:
        # devcgroup_check_permission() (security/device_cgroup.c): the device cgroup, or the
        # BPF program of cgroup v2, answers EPERM for a device it does not allow.
        return [Denial("device-cgroup", f"opening char device {node.rdev or '?'} is refused "
                       "with EPERM: the device cgroup (a container's device allow-list) does "
                       "not allow it", advice.device_cgroup(path, node.rdev or "10:MINOR"))]
    if err in (errno.ENXIO, errno.ENODEV):
        return [Denial("not-device", f"no driver behind {path} (char {node.rdev}): it is not "
                       "the userfaultfd device", _replace_node(ctx))]
    return [_other(err, f"open {path}")]


def _denials(o: Outcome, ctx: Context, outcomes: dict[str, Outcome]) -> list[Denial]:
    if o.name == DEV:
        return _dev_denials(o, ctx)
    if o.name == USER_MODE_ONLY:
        return _umo_denials(o, ctx)
    return _syscall_denials(o, ctx, outcomes.get(USER_MODE_ONLY))


_UMO_CAVEAT = ("UFFD_USER_MODE_ONLY (user-mode faults only: a syscall touching a registered page "
               "fails with EFAULT instead of being handled)")


def explain_all(ctx: Context, outcomes: list[Outcome]) -> list[Method]:
    """Every outcome explained, from the context and from what the other ways did: a pure
    decision (no system call), so that situations no process here can produce are testable
    with plain data."""
    by_name = {o.name: o for o in outcomes}
    methods = []
    for o in outcomes:
        spec = abi.OPEN_METHOD_BY_NAME[o.name]
        if o.ok:
            methods.append(Method(o.name, True, kernel_faults=spec.kernel_faults))
            continue
        denials = _denials(o, ctx, by_name)
        # Only ways that opened for real are offered instead; none weaker than needed.
        working = [abi.OPEN_METHOD_BY_NAME[x.name] for x in outcomes if x.ok]
        strong = [m.name for m in working if m.kernel_faults]
        alternatives = [_called(n) for n in strong] if strong else (
            [_UMO_CAVEAT] if spec.kernel_faults and o.name == SYSCALL
            and any(m.name == USER_MODE_ONLY for m in working) else [])
        fix = advice.instead(advice.all_of([d.fix for d in denials]),
                             alternatives if spec.kernel_faults else [])
        methods.append(Method(o.name, False,
                              errno.errorcode.get(o.errno, str(o.errno)) if o.errno else None,
                              "; ".join(d.cause for d in denials), fix, spec.kernel_faults,
                              denials))
    return methods


def explain(method: str, err: int, ctx: Context, step: str = "") -> tuple[str, str]:
    """(cause, fix) for a refusal of one method seen alone, from errno and the context."""
    [m] = explain_all(ctx, [Outcome(method, False, err, step)])
    return m.cause, m.fix


_SHARED = ("seccomp", "seccomp-maybe", "sysctl", "kernel", "sandbox")


def _called(name: str) -> str:
    return "the syscall" if name == SYSCALL else name


def judge(methods: list[Method]) -> Verdict:
    """The verdict on every way tried (in abi.OPEN_METHODS order, kernel-mode first)."""
    strong = next((m for m in methods if m.ok and m.kernel_faults), None)
    weak = next((m for m in methods if m.ok and not m.kernel_faults), None)
    if strong is not None:
        refused = [m for m in methods[:methods.index(strong)] if not m.ok and m.kernel_faults]
        cause = "; ".join(f"{_called(m.name)} is refused because {m.cause}" for m in refused)
        return Verdict(True, strong.name,
                       f"kernel-mode faults: yes, via {_called(strong.name)}"
                       + (f"; {cause}" if cause else ""), cause)
    kernel_ways = [m for m in methods if m.kernel_faults]
    fix = advice.for_each_way([(_called(m.name), advice.all_of([d.fix for d in m.denials]))
                               for m in kernel_ways])
    if weak is not None:
        cause = "; ".join(m.cause if m.cause.startswith(m.name) else
                          f"{_called(m.name)}: {m.cause}" for m in kernel_ways)
        return Verdict(False, weak.name, f"kernel-mode faults: no ({cause}); user-mode faults "
                       f"only, via {weak.name}", cause, fix)
    named: dict[str, str] = {}
    for m in methods:
        for d in m.denials:
            # What the process or the kernel is (a filter, the sysctl) is named once, however
            # many ways it refuses; what one way met is its own.
            named.setdefault(d.by if d.by in _SHARED else d.cause, d.cause)
    cause = "; ".join(named.values())
    weak_fix = [advice.all_of([d.fix for d in m.denials]) for m in methods if not m.kernel_faults]
    extra = [f for f in weak_fix if f and f not in fix]
    if extra:
        fix = "; or ".join([p for p in (fix, "for user-mode faults only: " + extra[0]) if p])
    return Verdict(False, None, f"kernel-mode faults: no, user-mode faults: no ({cause})",
                   cause, fix)


# ----- trying for real ----------------------------------------------------------------------

def _attempt(method: abi.OpenMethod, ctx: Context, nonblock: bool = True
             ) -> tuple[Outcome, int | None]:
    """Open one way (a node that is not the userfaultfd device is not opened at all)."""
    if method.device:
        refused = node_identity(ctx)
        if refused is not None:
            return Outcome(method.name, False, refused=refused), None
    try:
        fd = open_with(method, nonblock)
    except UffdError as exc:
        return Outcome(method.name, False, exc.errno or errno.EIO, exc.step), None
    return Outcome(method.name, True), fd


def diagnose() -> AccessReport:
    """Every way to open a userfaultfd, tried in the order of preference, then explained."""
    ctx = read_context()
    outcomes = []
    for m in abi.OPEN_METHODS:
        outcome, fd = _attempt(m, ctx)
        if fd is not None:
            os.close(fd)
        outcomes.append(outcome)
    return AccessReport(ctx, explain_all(ctx, outcomes))


def opener(name: str, nonblock: bool = True) -> Callable[[], Userfaultfd]:
    """A function that opens a fresh userfaultfd the named way (UFFDIO_API is once per fd, so
    the probe opens many)."""
    method = abi.OPEN_METHOD_BY_NAME[name]
    return lambda: Userfaultfd(open_with(method, nonblock))


def open_uffd(nonblock: bool = True, kernel_faults: bool = False) -> tuple[Userfaultfd, str]:
    """The first userfaultfd that opens, in the order of abi.OPEN_METHODS, and how it was
    opened; with ``kernel_faults`` only methods whose descriptors handle kernel-mode faults.
    Raises UffdctlError (UNAVAILABLE) with every cause and the fixes that work from here when
    none opens."""
    ctx = read_context()
    outcomes = []
    for method in abi.OPEN_METHODS:
        if kernel_faults and not method.kernel_faults:
            continue
        outcome, fd = _attempt(method, ctx, nonblock)
        if fd is not None:
            return Userfaultfd(fd), method.name
        outcomes.append(outcome)
    cause, fix = AccessReport(ctx, explain_all(ctx, outcomes)).summary()
    raise errors.UffdctlError(f"cannot open a userfaultfd: {cause}", fix, errors.UNAVAILABLE)
