"""`uffdctl probe` for people: PASS/WARN/FAIL lines with a hint, tables, colour only on a TTY."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import abi, kconfig
from ..advice import DEMO_MINOR_PAGES, demo_minor_outlook, leftover, reserve_hugepages
from ..output import inert
from ..probe import (
    NO_FREE_HUGE_PAGE,
    Outline,
    ProbeReport,
    ioctl_notes,
    missing_features,
    outline,
    widest,
)
from ..require import RequirementResult
from .documents import size_name

_STYLE = {"PASS": "green", "WARN": "yellow", "FAIL": "red", "INFO": "cyan"}
_CELL = {"ok": ("ok", "green"), "unsupported": ("EINVAL", "dim"), "denied": ("EPERM", "red"),
         "error": ("error", "red")}
_METHOD_WORDS = {"syscall": "the syscall"}


def verdict_line(o: Outline) -> str:
    """The answer in one line: "userfaultfd: kernel-mode faults via /dev/userfaultfd; minor on
    shmem and hugetlb; 0 free huge pages (2M)"."""
    if o.method is None:
        parts = [f"userfaultfd: not available: {o.cause}"]
    elif o.kernel_faults:
        parts = [f"userfaultfd: kernel-mode faults via {_METHOD_WORDS.get(o.method, o.method)}"]
    else:
        parts = [f"userfaultfd: user-mode faults only, via {o.method} (kernel-mode faults "
                 f"refused: {o.cause})"]
    if o.method is not None:
        parts.append("minor on " + " and ".join(o.minor_on) if o.minor_on else
                     "no minor faults")
    pools = sorted(o.pools, key=lambda p: not p.default)  # the default size first
    if not pools:
        parts.append("no huge page pools")
    else:
        first, *rest = pools
        parts.append(f"{first.free} free huge pages ({size_name(first.size_kb).upper()})"
                     + "".join(f", {p.free} ({size_name(p.size_kb).upper()})" for p in rest))
    return "; ".join(parts)


def _line(con: Console, level: str, what: str, hint: str = "") -> None:
    t = Text("  ")
    t.append(f"{level:<4}", style=_STYLE[level])
    t.append(f"  {what}")
    if hint:
        t.append(f"  ({hint})", style="dim")
    # Piped output stays one line per finding, so grep and CI logs see whole lines.
    con.print(t, soft_wrap=not con.is_terminal)


def _heading(con: Console, text: str) -> None:
    con.print()
    con.print(Text(text, style="bold"))


def render(report: ProbeReport, con: Console,
           results: list[RequirementResult] | None = None) -> None:
    k = report.kernel
    # The answer first, one line (grep and CI logs see it whole); then the detail.
    con.print(Text(verdict_line(outline(report)), style="bold"), soft_wrap=not con.is_terminal)
    con.print(Text(f"uffdctl probe: Linux {k.release} {k.machine}"))
    _caller(report, con)
    _kernel(report, con)
    _access(report, con)
    if report.api is None:
        cause, fix = report.access.summary()
        _heading(con, "API")
        _line(con, "FAIL", f"no userfaultfd can be opened: {cause}", f"fix: {fix}" if fix else "")
    else:
        _features(report, con)
        _matrix(report, con)
        _ioctls(report, con)
    _hugepages(report, con)
    if results:
        _heading(con, "Requirements")
        for r in results:
            _line(con, "PASS" if r.met else "FAIL", r.requirement.text, r.reason)


def _table_box(con: Console) -> box.Box:
    return box.SIMPLE_HEAD if con.is_terminal else box.ASCII2


def _kernel(report: ProbeReport, con: Console) -> None:
    k = report.kernel
    if k.config is None:
        _heading(con, "Kernel")
        _line(con, "INFO", "no kernel configuration readable in " + ", ".join(
            kconfig.candidates(k.release)) + ": Kconfig symbols unknown")
        return
    _heading(con, f"Kernel (configuration read from {k.config_source})")
    for sym, val in k.config.items():
        level = "PASS" if val in ("y", "m") else "INFO"
        if sym in k.not_in_release:
            # Not "is not set": the option does not exist in this release at all.
            _line(con, level, f"{sym}: not in this release (the symbol came in "
                              f"{k.not_in_release[sym]})")
        elif val == "n" and (where := abi.arch_first(sym, abi.kernel_arch(k.machine))):
            # A symbol behind which is the architecture's own: when this architecture selects
            # that one (abi.KCONFIG_GATES), the symbol itself or the one it depends on.
            own = abi.arch_gate(sym)
            when = (f"{where.arch} selects {{}} from {where.first}, {where.commit}"
                    if where.first else f"no release selects {{}} for {where.arch}")
            _line(con, level, f"{sym} is not set", when.format("it")
                  if own is None or own.symbol == sym else
                  f"it needs {own.symbol}: " + when.format("that"))
        else:
            _line(con, level, f"{sym}={val}" if val != "n" else f"{sym} is not set")


def _access(report: ProbeReport, con: Console) -> None:
    ctx = report.access.context
    _heading(con, f"Access (uid {ctx.euid})")
    # The verdict first: kernel-mode faults or not, through which way, and why not the others.
    verdict = report.access.verdict
    level = "PASS" if verdict.kernel_faults else "WARN" if verdict.method else "FAIL"
    _line(con, level, verdict.text, f"fix: {verdict.fix}" if verdict.fix else "")
    for m in report.access.methods:
        if m.ok:
            note = "" if m.kernel_faults else "user-mode faults only"
            _line(con, "PASS", m.name, note)
        else:
            level = "WARN" if report.access.usable else "FAIL"
            _line(con, level, f"{m.name}: {m.errno or 'not opened'}: {m.cause}",
                  f"fix: {m.fix}" if m.fix else "")
    sysctl = "absent" if ctx.sysctl is None else str(ctx.sysctl)
    seccomp = {0: "none", 1: "strict", 2: "filter"}.get(ctx.seccomp or 0, "unknown")
    if ctx.seccomp_filters:
        seccomp += f" ({ctx.seccomp_filters} filters)"
    userns = {True: "initial", False: "child", None: "unknown"}[ctx.initial_userns]
    node = ctx.dev
    dev = (f"{node.kind} {node.rdev}".strip() + f" mode {node.mode} uid {node.uid} gid {node.gid}"
           + (" with an ACL" if node.acl else "")) if node.exists else "absent"
    _line(con, "INFO", f"vm.unprivileged_userfaultfd={sysctl}; CAP_SYS_PTRACE "
                       f"{'yes' if ctx.cap_sys_ptrace else 'no'}; user namespace {userns}; "
                       f"seccomp {seccomp}; /dev/userfaultfd {dev}")


def _features(report: ProbeReport, con: Console) -> None:
    api = report.api
    assert api is not None
    _heading(con, f"API features (UFFDIO_API offers 0x{api.features_mask:x}; "
                  f"ioctls: {' '.join(abi.ioctl_names(api.ioctls_mask))}; via {api.method})")
    t = Table(box=_table_box(con), show_edge=False, pad_edge=False)
    # "since": the first release with the feature on this architecture (abi.first_on), not
    # the first anywhere: write-protect is 5.7 on x86_64 and 6.10 on arm64.
    arch = abi.kernel_arch(report.kernel.machine)
    for col in ("bit", "feature", f"since ({arch})", "offered", "usable", "meaning"):
        t.add_column(col, no_wrap=col != "meaning")
    for f in api.features:
        offered = Text("yes", style="green") if f.offered else Text("no", style="dim")
        if not f.offered:
            usable = Text("-", style="dim")
        elif f.usable:
            usable = Text("yes", style="green")
        elif f.why_not:
            usable = Text("no (not real here)", style="yellow")
        else:
            usable = Text(f"no ({f.errno})", style="yellow")
        t.add_row(str(f.bit), f.name, f.first_here or "never", offered, usable, f.meaning)
    con.print(t)
    # Why what is missing is missing: one line per cause (the architecture's support, a
    # Kconfig symbol, or the release), never inferred from a release table alone.
    for cause, fix in missing_features(report):
        _line(con, "INFO", cause, f"fix: {fix}" if fix else "")


def _memories(report: ProbeReport) -> list[str]:
    return list(dict.fromkeys(c.memory for c in report.matrix))


def _matrix(report: ProbeReport, con: Console) -> None:
    _heading(con, "Registration matrix (UFFDIO_REGISTER, for real)")
    memories = _memories(report)
    t = Table(box=_table_box(con), show_edge=False, pad_edge=False)
    t.add_column("mode", no_wrap=True)
    for mem in memories:
        t.add_column(mem, no_wrap=True)
    for mode in abi.MATRIX_MODES:
        row: list[Text | str] = [mode]
        for mem in memories:
            c = report.cell(mode, mem)
            label, style = _CELL.get(c.status if c else "error", ("?", "red"))
            if c is not None and c.status == "unsupported" and c.errno is None:
                label = "no feature"  # the kernel does not offer what the mode needs
            elif c is not None and c.status == "unsupported" and c.errno != "EINVAL":
                label = "no hugetlb"  # memfd_create: no huge pages of that size at all
            row.append(Text(label, style=style))
        t.add_row(*row)
    con.print(t)


def _ioctls(report: ProbeReport, con: Console) -> None:
    _heading(con, "Ioctls UFFDIO_REGISTER hands back (widest working mode per memory)")
    for mem in _memories(report):
        cell = widest(report, mem)
        if cell is None:
            bad = next(c for c in report.matrix if c.memory == mem)
            _line(con, "INFO", f"{mem}: {bad.error or bad.status}",
                  f"fix: {bad.fix}" if bad.fix else "")
            continue
        text = f"{mem} [{cell.mode}]: {' '.join(cell.working_ioctls)}"
        notes = [f"{n} listed but fails ({e})" for n, e in cell.failing_ioctls.items()]
        # Untried for want of a free huge page: capacity, not a failure (the cell stands).
        untried: dict[str, list[str]] = {}
        for n, why in cell.untested_ioctls.items():
            untried.setdefault(why, []).append(n)
        pool = report.hugepages.pool()
        for why, names in untried.items():
            notes.append(f"{' '.join(names)} not tried: {why}" + (
                f"; fix: {reserve_hugepages(pool.size)}"
                if why == NO_FREE_HUGE_PAGE and pool is not None else ""))
        _line(con, "WARN" if cell.failing_ioctls else "PASS", text, "; ".join(notes))
    _ioctl_notes(report, con)


def _ioctl_notes(report: ProbeReport, con: Console) -> None:
    """Why the lists above differ, one line per difference: the memory types it holds for,
    the ioctl, and the reason (abi.IOCTL_DIFFERENCES; uffdctl-probe(1) has the sources)."""
    grouped: dict[tuple[str, str, str, str | None], list[str]] = {}
    for n in ioctl_notes(report):
        grouped.setdefault((n.ioctl, n.status, n.reason, n.errno), []).append(n.memory)
    for (ioctl, status, reason, errno), memories in grouped.items():
        what = (f"UFFDIO_{ioctl.upper()} listed, refused ({errno})" if status == "refused"
                else f"no UFFDIO_{ioctl.upper()}")
        _line(con, "WARN" if status == "unexplained" else "INFO",
              f"{', '.join(memories)}: {what}: {reason}")


def _hugepages(report: ProbeReport, con: Console) -> None:
    _heading(con, "Huge pages")
    hp = report.hugepages
    if not hp.pools:
        _line(con, "INFO", "no huge page pools (CONFIG_HUGETLBFS off?)")
    for p in hp.pools:
        _line(con, "PASS" if p.available else "INFO",
              f"{p.size_kb} kB{' (default)' if p.default else ''}: nr {p.nr}, free {p.free}, "
              f"reserved {p.reserved}, surplus {p.surplus}, overcommit {p.overcommit}")
    if hp.mounts:
        # Mount points are chosen by whoever mounted them: shown inert.
        _line(con, "INFO", "hugetlbfs mounted at " + ", ".join(inert(m) for m in hp.mounts))
    for left in report.leftover:
        text, fix = leftover(left)
        _line(con, "WARN" if left.left else "INFO", text, f"fix: {fix}" if fix else "")
    pool = hp.pool()
    works = None
    if report.api is not None:
        # Only the backings this kernel can run `demo minor` on are named (none on 5.10).
        from ..demoneeds import backings_that_work

        works = backings_that_work("minor", report.api.features_mask, report.kernel.here())
    ready = pool is not None and pool.available >= DEMO_MINOR_PAGES
    level = "PASS" if ready and (works is None or "hugetlb" in works) else "WARN"
    _line(con, level, demo_minor_outlook(hp, report.access.context.euid, works))


def _caller(report: ProbeReport, con: Console) -> None:
    """Whose answer this is (probe --pid/--user): who, what the probe took on for real and
    what rests on inference instead."""
    c = report.caller
    if c is None:
        return
    _heading(con, f"Caller: {inert(c.name)}")
    who = (f"uid {c.uid} gid {c.gid} groups {','.join(map(str, c.groups)) or '-'}, "
           f"effective capabilities {c.cap_eff:#x}"
           + (", no_new_privs" if c.no_new_privs else "")
           + (f", {c.seccomp_filters} seccomp filter(s)" if c.seccomp == 2 else "")
           + ("" if c.initial_userns else ", its own user namespace"))
    _line(con, "INFO", who)
    for what in c.copied:
        _line(con, "PASS", f"taken on: {inert(what)}")
    for what in c.inferred:
        _line(con, "WARN", f"inferred: {inert(what)}")
