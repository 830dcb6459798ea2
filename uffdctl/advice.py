"""Fixes and outlooks in one place: what to do about a finding, worded for where the user
stands.  Plain strings from plain data; the logic modules attach them to what they return."""

from __future__ import annotations

from collections.abc import Sequence

from . import abi
from .hugepages import HugePages, Leftover, Shortfall, default_size_kb
from .support import ARCHITECTURE, BUILD, CONFIGURATION, RELEASE, Absence

DEMO_MINOR_PAGES = 16  # `demo minor` as is: 8 pages, and as many for the floor's mapping


def pool_command(size_kb: int, count: int | str) -> str:
    """The command that sets the size of the pool of ``size_kb`` pages: vm.nr_hugepages is
    only the default size's pool; any other size has its own file in sysfs."""
    if size_kb == default_size_kb():
        return f"sysctl vm.nr_hugepages={count}"
    return f"echo {count} > /sys/kernel/mm/hugepages/hugepages-{size_kb}kB/nr_hugepages"


def reserve_hugepages(page_size: int) -> str:
    kb = page_size // 1024
    if kb == default_size_kb():
        return (f"reserve some: sysctl vm.nr_hugepages=N (or write N to /sys/kernel/mm/"
                f"hugepages/hugepages-{kb}kB/nr_hugepages) as root")
    return (f"reserve some: write N to /sys/kernel/mm/hugepages/hugepages-{kb}kB/nr_hugepages "
            f"as root (vm.nr_hugepages is the {default_size_kb()} kB pool, not this one)")


def use_backings(others: Sequence[str]) -> str:
    """'use --backing shmem' (several joined by 'or'): the other backings that can run the
    demo on this kernel (demo.Scenario.works_on); '' when none can."""
    return "use " + " or ".join(f"--backing {b}" for b in others) if others else ""


def or_use(fix: str, others: Sequence[str], sep: str = ", or ") -> str:
    """``fix``, then the other backings that work here if there are any:
    'free memory, or use --backing shmem'."""
    return f"{fix}{sep}{use_backings(others)}" if others else fix


def hugepages_short(short: Shortfall, no_reserve: bool, others: Sequence[str]
                    ) -> tuple[str, str]:
    """(cause, fix) when a run cannot get its huge pages and may not grow the pool;
    ``others``: the demo's other backings that work on this kernel (demo.Scenario.works_on)."""
    free = max(0, short.available - short.claimed)
    cause = f"no free huge pages: {short.need} of {short.size_kb} kB needed, "
    if short.claimed and short.available:
        whose = "running uffdctl pid " + ", ".join(str(p) for p in short.claimers)
        cause += (f"{short.available} free, all claimed by {whose}" if not free else
                  f"{free} free ({short.available - free} more claimed by {whose})")
    else:
        cause += f"{free} free"
        if short.holders:  # they have mapped what they claimed: in use, by them
            cause += "; " + ", ".join(f"running uffdctl pid {pid} holds {n}"
                                      for pid, n in short.holders)
    cause += " (--no-reserve was given)" if no_reserve else " (not root)"
    more = pool_command(short.size_kb, short.nr + short.need
                        - max(0, short.available - short.claimed))
    fix = "drop --no-reserve, or " if no_reserve else ""
    fix += or_use(f"as root: {more}", others)
    if short.claimed or short.holders:
        fix += ", or wait until the other run ends"
    return cause, fix


def give_back(size_kb: int, count: int, record: str, root: bool) -> str:
    """The exact commands that give back pages a killed run left, and drop its record (or
    the next uffdctl run would give them back a second time)."""
    return ("" if root else "as root: ") + f"{pool_command(size_kb, count)} && rm {record}"


def leftover(left: Leftover) -> tuple[str, str]:
    """(what happened, fix) for pages a killed uffdctl run left in a pool."""
    whose = (f"{left.pages} {left.size_kb} kB huge pages that uffdctl pid {left.pid} reserved "
             "and never gave back (it was killed)")
    if not left.left:
        return f"gave back {whose}", ""
    fix = give_back(left.size_kb, left.keep, left.record, left.root)
    if left.given_back:
        return (f"gave back {left.given_back} of {whose}; {left.left} are still in the pool "
                f"({left.why})", fix)
    return f"{whose}: {left.left} are still in the pool ({left.why})", fix


def demo_minor_outlook(pools: HugePages, euid: int, works: Sequence[str] | None = None) -> str:
    """What the huge page state means for `uffdctl demo minor`, in one line.  ``works``: the
    backings `demo minor` can use on this kernel (demoneeds.backings_that_work("minor",
    offered features)); None when not known, and then no other backing is named."""
    others = [b for b in works or () if b != "hugetlb"]
    instead = " or ".join(f"`demo minor --backing {b}`" for b in others)
    if works is not None and "hugetlb" not in works:
        return ("this kernel cannot do `demo minor` on huge pages (hugetlb)"
                + (f"; run {instead}" if instead else ", nor on shmem"))
    pool = pools.pool()
    if pool is None:
        return "no huge page pool: " + (f"run {instead}" if instead else
                                         "`demo minor` on hugetlb cannot run")
    need = DEMO_MINOR_PAGES
    if pool.available >= need:
        return f"{pool.available} free {pool.size_kb} kB pages: `demo minor` can run as is"
    have = f"{pool.available} free {pool.size_kb} kB pages of {need}" if pool.available \
        else "no free huge pages"
    if euid == 0:
        return (f"{have}: `demo minor` reserves what it needs as root and gives it "
                "back afterwards")
    return (f"{have}: as root, `{pool_command(pool.size_kb, pool.nr + need - pool.available)}`"
            + (f"; or run {instead}" if instead else ""))


def not_offered(absent: Sequence[Absence]) -> str:
    """Why the kernel does not offer these features, in one line naming what is really
    missing (support.absence decided it): the release that added a feature, the
    architecture's support with the release and commit that brought it there, or the Kconfig
    symbol a configuration left unset.  Features missing for one reason are named together."""
    return "; ".join(cause for cause, _ in not_offered_groups(absent))


def not_offered_groups(absent: Sequence[Absence]) -> list[tuple[str, str]]:
    """(cause, fix) per reason, the features missing for one reason together: every feature
    a release lacks in one "added in" list, whatever gates it; the rest by the symbol."""
    groups: dict[tuple[object, ...], list[Absence]] = {}
    for a in absent:
        key = (a.why, "" if a.why == RELEASE else a.symbol, a.offered)
        groups.setdefault(key, []).append(a)
    out = []
    for items in groups.values():
        a = items[0]
        names = ", ".join(x.name for x in items)
        if a.why == RELEASE:
            cause = "this kernel does not offer " + ", ".join(
                f"{x.name} (added in {x.first})" for x in items)
        elif a.offered:
            gate = abi.KCONFIG_GATE_BY_SYMBOL[a.symbol]
            cause = (f"{names} is offered, but {_arch_reason(a, 'this kernel')}; UFFDIO_API "
                     f"hides it only from {gate.filtered_from}, commit {gate.filtered_by}")
        else:
            cause = f"this kernel does not offer {names}: {_reason(a)}"
        out.append((cause, absence_fix(items)))
    return out


def unoffered_reason(a: Absence) -> str:
    """What follows "not offered by kernel RELEASE" for one feature: " (added in 5.14)" when
    the release predates it, else ": " and what is really missing."""
    if a.why == RELEASE:
        return f" (added in {a.first})"
    if a.offered:
        return f", but {_arch_reason(a, 'it')}"
    return f": {_reason(a)}"


def _symbol_state(a: Absence) -> str:
    if a.setting == "n":
        return f"{a.symbol} is not set"
    if a.setting:
        return f"{a.symbol}={a.setting}"
    return f"it needs {a.symbol}"


def _arch_reason(a: Absence, kernel: str = "it") -> str:
    """Why an architecture lacks it: 'it has no userfaultfd write-protect on arm64
    (CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set: arm64 gained it in 6.10, commit ...)'."""
    if not a.known_arch:
        return f"{kernel} has no {a.support} on {a.arch} ({_symbol_state(a)})"
    hedge = "" if a.verified else " (from uffdctl's fact sheet, not verified in the source)"
    if a.arch_first is None:
        return (f"{a.arch} has no {a.support} in any release: no release selects {a.symbol} "
                f"for {a.arch}{'' if a.verified else ' as far as uffdctl knows'}")
    gained = f"{a.arch} gained it in {a.arch_first}" + (f", commit {a.commit}" if a.commit
                                                         else "") + hedge
    if a.condition and a.release_at_least_arch_first:
        return (f"{a.arch} has {a.support} only on {a.condition} ({_symbol_state(a)}; "
                f"{gained})")
    return f"{kernel} has no {a.support} on {a.arch} ({_symbol_state(a)}: {gained})"


def _reason(a: Absence) -> str:
    if a.why == ARCHITECTURE:
        return _arch_reason(a)
    where = f" ({a.config_source})" if a.config_source else ""
    if a.why == CONFIGURATION:
        return f"{a.symbol} is not set in this kernel's configuration{where}"
    found = f"; {a.symbol}={a.setting}{where}" if a.symbol and a.setting else ""
    return (f"this kernel's build leaves it out, though {a.arch} has it from "
            f"{a.needs or a.first}{found}")


def absence_fix(absent: Sequence[Absence]) -> str:
    """What gives these features from here, one line: a release that has them on this
    architecture, another architecture, or a configuration with the symbol set."""
    fixes = []
    late = [a for a in absent if a.needs and (a.offered or not abi.release_at_least(
        a.release, a.needs))]
    if late:
        last = max(late, key=lambda a: abi.release_order(a.needs or ""))
        fix = f"use a kernel {last.needs} or newer"
        if last.why == ARCHITECTURE:
            fix += f", the first with {last.support} on {last.arch}"
        fixes.append(fix)
    for a in absent:
        if a.why == ARCHITECTURE and a.needs is None and a.known_arch:
            fixes.append(f"run it on an architecture with {a.support}: " + ", ".join(
                f"{w.arch} {w.first} or newer" for w in abi.KCONFIG_GATE_BY_SYMBOL[
                    a.symbol].arches if w.first and w.verified))
        elif a.why == ARCHITECTURE and a.condition and a not in late:
            fixes.append(f"run it on {a.condition}")
        elif a.why == ARCHITECTURE and not a.known_arch:
            fixes.append(f"use a kernel whose architecture selects {a.symbol}")
        elif a.why == CONFIGURATION:
            fixes.append(f"use a kernel built with {a.symbol}=y")
        elif a.why == BUILD:
            fixes.append(f"use a kernel built with this support for {a.arch}")
    # Each is needed (a newer release and another architecture are not alternatives).
    return "; and ".join(dict.fromkeys(fixes))


def missing_features(what: str, memory: str, absent: Sequence[Absence], works: list[str]
                     ) -> tuple[str, str]:
    """(cause, fix) when the kernel does not offer features `demo WHAT` needs on ``memory``.
    The fix names only what works from here: ``works``, the other backings of this demo whose
    needs are offered, or what gives the missing support (absence_fix)."""
    cause = f"{not_offered(absent)}: `demo {what}` cannot run on {memory} memory here"
    fixes = [use_backings(works)] if works else []
    fixes.append(absence_fix(absent))
    return cause, "; or ".join(f for f in fixes if f)


# ----- opening a userfaultfd (access.py decides which apply; these say what to do) -----------

def allow_syscall_in_seccomp() -> str:
    return ("allow the userfaultfd syscall in the container's or service's seccomp profile, "
            "or run outside that sandbox")


def allow_ioctl_in_seccomp(request: int) -> str:
    return (f"allow ioctl request 0x{request:x} (USERFAULTFD_IOC_NEW) in the container's or "
            "service's seccomp profile")


def allow_unprivileged(child_userns: bool) -> str:
    """The kernel's own check (new_userfaultfd(), fs/userfaultfd.c): CAP_SYS_PTRACE counts only
    in the initial user namespace, and the sysctl is the host's (a user namespace cannot set
    it)."""
    if child_userns:
        return ("run `sysctl vm.unprivileged_userfaultfd=1` as root on the host, or run the "
                "process outside its user namespace with CAP_SYS_PTRACE")
    return "run `sysctl vm.unprivileged_userfaultfd=1` as root, or give the process CAP_SYS_PTRACE"


def kernel_with_userfaultfd() -> str:
    return "use a kernel built with CONFIG_USERFAULTFD=y"


def leave_syscall_sandbox() -> str:
    """gVisor's runsc answers system calls in its own kernel (the Sentry), which has no
    userfaultfd: only a runtime whose calls reach a Linux kernel helps."""
    return ("run it where its system calls reach a Linux kernel: runc or crun instead of "
            "gVisor's runsc, or a VM with its own kernel (Kata Containers)")


def _as_root(euid: int) -> str:
    return "" if euid == 0 else "as root: "


def make_node(path: str, rdev: str, euid: int, group: str, replace: bool) -> str:
    """Create the device node by hand (the kernel's own is made by devtmpfs, mode 0600 root):
    ``rdev`` is "10:257" as /sys/class/misc/userfaultfd/dev gives it; ``group``: one of the
    process's groups, which gets rw (none for root)."""
    major, _, minor = rdev.partition(":")
    mode = "0600" if euid == 0 else "0660"
    cmd = (f"rm {path} && " if replace else "") + f"mknod -m {mode} {path} c {major} {minor}"
    if euid != 0:
        cmd += f" && chgrp {group} {path}"
    return (f"{_as_root(euid)}`{cmd}`; in a container, pass the host's node in instead "
            f"(`--device {path}`)")


def make_node_unknown_numbers(path: str, euid: int) -> str:
    return (f"{_as_root(euid)}recreate {path} with `mknod {path} c 10 MINOR`, MINOR as "
            "/sys/class/misc/userfaultfd/dev on the host gives it, or mount devtmpfs on /dev "
            "(the kernel makes the node there)")


KERNEL_FAULTS_TO_WHOEVER = ("whoever may open it handles kernel-mode faults: the sysctl and "
                            "CAP_SYS_PTRACE are not consulted")


def node_permission(path: str, who: str, acl: bool, euid: int, uid: int, user: str,
                    group: str, group_grants: bool, owning_group: str) -> str:
    """The exact change that lets this process open the node read-write, for the permission
    class the kernel applies to it (``who``: the owner, the owning group, named user u:UID,
    named group g:GID, others).  ``group_grants``: the owning group's entry already allows rw (add
    the user to that group rather than take the node from it)."""
    if who == "the owner":
        # The owner may change the mode itself.
        return f"`chmod u+rw {path}`; {KERNEL_FAULTS_TO_WHOEVER}"
    elif who == "the owning group":
        change = f"`setfacl -m g::rw,m::rw {path}`" if acl else f"`chmod g+rw {path}`"
    elif who.startswith("named user"):
        change = f"`setfacl -m u:{uid}:rw,m::rw {path}`"
    elif who.startswith("named group"):
        gid = who.rsplit(":", 1)[-1]
        change = f"`setfacl -m g:{gid}:rw,m::rw {path}`"
    elif group_grants:
        change = (f"add user {user} to group {owning_group} (`usermod -aG {owning_group} "
                  f"{user}`, in effect from its next login), or `setfacl -m u:{uid}:rw {path}` "
                  "(this user only)")
    else:
        change = (f"`chgrp {group} {path} && chmod g+rw {path}` (a group of this process; a "
                  f"udev rule KERNEL==\"userfaultfd\", GROUP=\"{group}\", MODE=\"0660\" keeps "
                  f"it across reboots), or `setfacl -m u:{uid}:rw {path}` (this user only)")
    return f"{_as_root(euid)}{change}; {KERNEL_FAULTS_TO_WHOEVER}"


def node_on_nodev(path: str) -> str:
    return (f"put {path} on a filesystem mounted without nodev (devtmpfs on /dev), or pass the "
            f"host's node into the container (`--device {path}`)")


def device_cgroup(path: str, rdev: str) -> str:
    return (f"allow the device in the container: `--device {path}` (docker, podman), or a "
            f"device cgroup rule `c {rdev} rw`")


def lsm_audit() -> str:
    return "see the audit log (`ausearch -m avc`, or dmesg) and allow it in the policy"


def all_of(fixes: list[str]) -> str:
    """Fixes that are all needed (several things deny the same way), each once."""
    fixes = list(dict.fromkeys(f for f in fixes if f))
    return "; and also ".join(fixes)


def instead(fix: str, alternatives: list[str]) -> str:
    """``fix``, then the other ways that already work here."""
    alt = " or ".join(alternatives)
    if not alt:
        return fix
    return f"{fix}; or instead use {alt}" if fix else f"use {alt}"


def for_each_way(fixes: list[tuple[str, str]]) -> str:
    """What works from here, way by way: [("the syscall", fix), ...], identical ones once."""
    seen: list[str] = []
    parts = []
    for way, fix in fixes:
        if fix and fix not in seen:
            seen.append(fix)
            parts.append(f"for {way}: {fix}")
    return "; or ".join(parts)
