"""`uffdctl inspect` and `uffdctl ps` for people (rich tables, a live view) and for programs
(JSON).  Names, command lines and paths come from other processes: they reach the terminal
only as inert rich Text, never as markup (output.inert escapes control characters)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..output import inert
from ..procs import ProcessReport, PsReport, inspect_process
from ..smaps import Region, decode_flags

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

SCHEMA_VERSION = 1
TOTAL_NOTE = ("total = threads still blocked on the descriptor (pending + read but not yet "
              "resolved); it is not a running count of faults")


# ----- JSON ---------------------------------------------------------------------------------------

def region_json(r: Region, report: ProcessReport) -> dict[str, Any]:
    owner = report.owners.get(r.start)
    return {"start": r.start, "end": r.end, "modes": r.modes, "memory": r.memory,
            "flags": r.flags, "path": r.path, "perms": r.perms, "offset": r.offset,
            "dev": r.dev, "inode": r.inode, "size_kb": r.sizes_kb.get("Size"),
            "rss_kb": r.sizes_kb.get("Rss"), "kernel_page_size": r.kernel_page_size,
            "uffd_fds": owner.fds if owner else [],
            "uffd_fd_certain": bool(owner and owner.certain)}


def report_json(report: ProcessReport) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "pid": report.pid, "comm": report.comm,
        "cmdline": report.cmdline, "state": report.state, "minflt": report.minflt,
        "all_regions": report.all_regions,
        "regions": [region_json(r, report) for r in report.regions],
        "uffds": [{"fd": u.fd, "pending": u.pending, "total": u.total,
                   "features": u.features, "features_mask": u.features_mask,
                   "initialized": u.info.initialized} for u in report.uffds],
        "stuck_threads": [{"tid": t.tid, "comm": t.comm, "wchan": t.wchan, "state": t.state}
                          for t in report.stuck_threads],
    }


def ps_json(report: PsReport) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION, "scanned": report.scanned,
        "processes": [{"pid": r.pid, "comm": r.comm, "uffds": r.uffds,
                       "registered_regions": r.registered_regions,
                       "regions_by_mode": r.regions_by_mode, "pending": r.pending,
                       "stuck_threads": r.stuck_threads} for r in report.rows],
        "unreadable": [{"reason": k, "processes": v} for k, v in report.unreadable.items()],
        "unreadable_total": report.unreadable_total,
    }


# ----- tables -------------------------------------------------------------------------------------

def _size(n: int) -> str:
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n}B" if n < 1024 else f"{n / 1024:.0f}K"


def _box(con: Console) -> Any:
    from rich import box

    return box.SIMPLE_HEAD if con.is_terminal else box.ASCII2


def process_view(report: ProcessReport, con: Console, *, flags_detail: bool = False,
                 changes: list[str] | None = None, rate: float | None = None
                 ) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[RenderableType] = []
    head = Text()
    head.append(f"pid {report.pid} ", style="bold")
    head.append(inert(report.comm), style="bold")
    head.append(f"  state {inert(report.state)}")
    if rate is not None:
        head.append(f"  minor faults {rate:.0f}/s")
    parts.append(head)
    if report.cmdline:
        parts.append(Text("cmdline: " + inert(" ".join(report.cmdline))[:400], style="dim"))

    if report.stuck_threads:
        t = Table(title="threads stuck in a userfaultfd fault", box=_box(con),
                  title_justify="left", title_style="bold red")
        for col in ("tid", "name", "state", "wchan"):
            t.add_column(col)
        for s in report.stuck_threads:
            t.add_row(Text(str(s.tid)), Text(inert(s.comm)), Text(inert(s.state)),
                      Text(inert(s.wchan)))
        parts.append(t)
        waiting = [f"fd {u.fd}" for u in report.uffds if u.total]
        parts.append(Text(f"  {len(report.stuck_threads)} thread(s) wait for a fault nobody "
                          "has resolved" + (f" (on {', '.join(waiting)})" if waiting else "")
                          + "; the handler reading that descriptor is late, hung or gone",
                          style="red"))

    if report.uffds:
        t = Table(title="userfaultfd descriptors", box=_box(con), title_justify="left",
                  title_style="bold")
        for col in ("fd", "pending", "total", "features"):
            t.add_column(col, overflow="fold")
        for u in report.uffds:
            feats = " ".join(u.features) or ("none" if u.info.initialized else
                                             "UFFDIO_API not done")
            t.add_row(Text(str(u.fd)), Text(str(u.pending)), Text(str(u.total)),
                      Text(feats))
        parts.append(t)
        parts.append(Text("  " + TOTAL_NOTE, style="dim"))
    else:
        parts.append(Text("no userfaultfd descriptors open in this process"))

    title = "regions" if report.all_regions else "registered regions"
    shown = report.regions
    if not shown:
        parts.append(Text(f"no {title}"))
    else:
        t = Table(title=title, box=_box(con), title_justify="left", title_style="bold")
        cols = ["start-end", "size", "memory", "uffd modes", "descriptor"]
        cols += ["flags", "path"] if flags_detail else ["path"]
        for col in cols:
            t.add_column(col, overflow="fold")
        for r in shown:
            owner = report.owners.get(r.start)
            row = [Text(f"{r.start:x}-{r.end:x}", no_wrap=True), Text(_size(r.length)),
                   Text(r.memory), Text("+".join(r.modes) or "-",
                                        style="bold" if r.modes else ""),
                   Text(owner.text() if owner else "-")]
            if flags_detail:
                row.append(Text(inert(" ".join(f"{m}={name.removeprefix('VM_') or '?'}"
                                               for m, name, _ in decode_flags(r.flags)))))
            row.append(Text(inert(r.path)))
            t.add_row(*row)
        parts.append(t)
        if any(r.registered for r in shown):
            parts.append(Text("  descriptor: the kernel does not record which descriptor "
                              "registered a region; shown is each fd whose requested "
                              "features allow that mode on that memory", style="dim"))
    for c in changes or []:
        parts.append(Text(inert(c)))
    return Group(*parts)


def render_report(report: ProcessReport, con: Console, flags_detail: bool = False) -> None:
    con.print(process_view(report, con, flags_detail=flags_detail))


def widen(con: Console) -> Console:
    """Piped tables get room: addresses and paths folded over lines help nobody."""
    if not con.is_terminal:
        con.width = 240
    return con


def render_ps(report: PsReport, con: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if report.rows:
        t = Table(box=_box(con))
        for col in ("pid", "command", "uffds", "missing", "wp", "minor", "pending", "stuck"):
            t.add_column(col)
        for r in report.rows:
            by = r.regions_by_mode
            t.add_row(Text(str(r.pid)), Text(inert(r.comm)), Text(str(r.uffds)),
                      *(Text(str(by.get(m, 0))) for m in ("missing", "wp", "minor")),
                      Text(str(r.pending)),
                      Text(str(r.stuck_threads), style="red" if r.stuck_threads else ""))
        con.print(t)
    else:
        con.print(Text(f"no process holds a userfaultfd ({report.scanned} processes scanned)"))
    for reason, n in report.unreadable.items():
        con.print(Text(f"{n} processes not readable: {reason}", style="yellow"),
                  soft_wrap=True)


# ----- watching -------------------------------------------------------------------------------

def changes(before: ProcessReport | None, after: ProcessReport) -> list[str]:
    """What changed between two looks at a process, one line each (plain text)."""
    if before is None:
        return []
    out = []
    old = {(r.start, r.end): r for r in before.registered}
    new = {(r.start, r.end): r for r in after.registered}
    for key in sorted(new.keys() - old.keys()):
        r = new[key]
        out.append(f"+ region {r.start:x}-{r.end:x} {r.memory} registered "
                   f"{'+'.join(r.modes)}")
    for key in sorted(old.keys() - new.keys()):
        r = old[key]
        out.append(f"- region {r.start:x}-{r.end:x} {r.memory} no longer registered")
    for key in sorted(new.keys() & old.keys()):
        if new[key].modes != old[key].modes:
            out.append(f"~ region {key[0]:x}-{key[1]:x} modes {'+'.join(old[key].modes)} -> "
                       f"{'+'.join(new[key].modes)}")
    pend_old = {u.fd: u.pending for u in before.uffds}
    for u in after.uffds:
        if u.fd not in pend_old:
            out.append(f"+ fd {u.fd} userfaultfd opened ({' '.join(u.features) or 'no features'})")
        elif u.pending != pend_old[u.fd]:
            out.append(f"~ fd {u.fd} pending {pend_old[u.fd]} -> {u.pending}")
    for fd in sorted(pend_old.keys() - {u.fd for u in after.uffds}):
        out.append(f"- fd {fd} userfaultfd closed")
    stuck_old = {t.tid for t in before.stuck_threads}
    stuck_new = {t.tid for t in after.stuck_threads}
    for tid in sorted(stuck_new - stuck_old):
        out.append(f"! thread {tid} stuck in a fault")
    for tid in sorted(stuck_old - stuck_new):
        out.append(f"  thread {tid} released")
    return out


def watch(pid: int, *, interval: float, all_regions: bool, con: Console,
          count: int | None = None) -> str:
    """Refresh until the process exits (returns the closing message) or ``count`` looks.

    On a terminal the view is redrawn in place; piped, the first look is printed whole and
    then one line per change, each stamped with the time, so a log shows what happened."""
    from rich.text import Text

    report = inspect_process(pid, all_regions)
    if not con.is_terminal:
        render_report(report, con)

        def show(_report: ProcessReport, lines: list[str], _rate: float) -> None:
            for line in lines:
                con.print(Text(inert(line)), soft_wrap=True)
        return _loop(pid, report, interval, all_regions, count, show)

    from rich.live import Live

    history: list[str] = []
    with Live(process_view(report, con), console=con, auto_refresh=False) as live:
        def redraw(new: ProcessReport, lines: list[str], rate: float) -> None:
            history[:] = (history + lines)[-10:]
            live.update(process_view(new, con, changes=history, rate=rate), refresh=True)
        return _loop(pid, report, interval, all_regions, count, redraw)


def _loop(pid: int, report: ProcessReport, interval: float, all_regions: bool,
          count: int | None, show: Any) -> str:
    """Look again every ``interval``; hand each look, its time-stamped changes and the
    minor-fault rate to ``show``.  Returns the message to print when the process exits."""
    import time

    from .. import errors

    previous, t_prev, looks = report, time.monotonic(), 1
    while count is None or looks < count:
        time.sleep(interval)
        try:
            report = inspect_process(pid, all_regions)
        except errors.UffdctlError as exc:
            if exc.status == errors.NO_PROCESS:
                return (f"pid {pid} ({inert(previous.comm)}) exited; watched for {looks} "
                        "refreshes")
            raise
        now = time.monotonic()
        rate = (report.minflt - previous.minflt) / max(now - t_prev, 1e-6)
        stamp = time.strftime("%H:%M:%S")
        show(report, [f"{stamp} {c}" for c in changes(previous, report)], rate)
        previous, t_prev, looks = report, now, looks + 1
    return ""
