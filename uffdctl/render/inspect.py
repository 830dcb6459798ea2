"""`uffdctl inspect` and `uffdctl ps` for people: rich tables and the live view of --watch.
Names, command lines and paths come from other processes: they reach the terminal only as
inert rich Text, never as markup (output.inert escapes control characters).

The JSON documents are built in render/documents.py (no rich on the --json path); they are
re-exported here for the callers that still import them from this module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import procs
from ..output import inert
from ..smaps import UFFD_MODE_ORDER, decode_flags
from .documents import ps_json, report_json

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from ..procs import ProcessReport, PsReport

# ps_json and report_json: re-exported from documents for the callers that import them here.
__all__ = ["process_view", "ps_json", "render_ps", "render_report", "report_json", "watch",
           "widen"]

TOTAL_NOTE = ("total = threads still blocked on the descriptor (pending + read but not yet "
              "resolved); it is not a running count of faults")
OWNER_NOTE = ("descriptor: the kernel does not record which descriptor registered a region; "
              "shown is each fd whose requested features point to that mode on that memory "
              "(evidence, not proof: the kernel checks only WP_ASYNC)")


def _size(n: int) -> str:
    for unit, div in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n}B" if n < 1024 else f"{n / 1024:.0f}K"


def _box(con: Console) -> Any:
    from rich import box

    return box.SIMPLE_HEAD if con.is_terminal else box.ASCII2


def _table(con: Console, title: str, columns: list[str], style: str = "bold",
           fold: bool = True) -> Table:
    from rich.table import Table

    t = Table(title=title, box=_box(con), title_justify="left", title_style=style)
    for col in columns:
        t.add_column(col, overflow="fold" if fold else "ellipsis")
    return t


# ----- one process ----------------------------------------------------------------------------

def _head(report: ProcessReport, rate: float | None) -> list[RenderableType]:
    from rich.text import Text

    head = Text()
    head.append(f"pid {report.pid} ", style="bold")
    head.append(inert(report.comm), style="bold")
    head.append(f"  state {inert(report.state)}")
    if rate is not None:
        head.append(f"  minor faults {rate:.0f}/s")
    parts: list[RenderableType] = [head]
    if report.cmdline:
        parts.append(Text("cmdline: " + inert(" ".join(report.cmdline))[:400], style="dim"))
    return parts


def _stuck(report: ProcessReport, con: Console) -> list[RenderableType]:
    from rich.text import Text

    if not report.stuck_threads:
        return []
    t = _table(con, "threads stuck in a userfaultfd fault", ["tid", "name", "state", "wchan"],
               "bold red", fold=False)
    for s in report.stuck_threads:
        t.add_row(Text(str(s.tid)), Text(inert(s.comm)), Text(inert(s.state)),
                  Text(inert(s.wchan)))
    waiting = [f"fd {u.fd}" for u in report.uffds if u.total]
    return [t, Text(f"  {len(report.stuck_threads)} thread(s) wait for a fault nobody has "
                    "resolved" + (f" (on {', '.join(waiting)})" if waiting else "")
                    + "; the handler reading that descriptor is late, hung or gone",
                    style="red")]


def _descriptors(report: ProcessReport, con: Console) -> list[RenderableType]:
    from rich.text import Text

    if not report.uffds:
        return [Text("no userfaultfd descriptors open in this process")]
    t = _table(con, "userfaultfd descriptors", ["fd", "pending", "total", "features"])
    for u in report.uffds:
        feats = " ".join(u.features) or ("none" if u.info.initialized else
                                         "UFFDIO_API not done")
        t.add_row(Text(str(u.fd)), Text(str(u.pending)), Text(str(u.total)), Text(feats))
    return [t, Text("  " + TOTAL_NOTE, style="dim")]


def _regions(report: ProcessReport, con: Console, flags_detail: bool) -> list[RenderableType]:
    from rich.text import Text

    title = "regions" if report.all_regions else "registered regions"
    if not report.regions:
        return [Text(f"no {title}")]
    cols = ["start-end", "size", "memory", "uffd modes", "descriptor"]
    t = _table(con, title, cols + (["flags", "path"] if flags_detail else ["path"]))
    for r in report.regions:
        owner = report.owners.get(r.start)
        row = [Text(f"{r.start:x}-{r.end:x}", no_wrap=True), Text(_size(r.length)),
               Text(r.memory), Text("+".join(r.modes) or "-", style="bold" if r.modes else ""),
               Text(owner.text() if owner else "-")]
        if flags_detail:
            row.append(Text(inert(" ".join(f"{m}={name.removeprefix('VM_') or '?'}"
                                           for m, name, _ in decode_flags(r.flags)))))
        row.append(Text(inert(r.path)))
        t.add_row(*row)
    parts: list[RenderableType] = [t]
    if any(r.registered for r in report.regions):
        parts.append(Text("  " + OWNER_NOTE, style="dim"))
    return parts


def process_view(report: ProcessReport, con: Console, *, flags_detail: bool = False,
                 changes: list[str] | None = None, rate: float | None = None
                 ) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    return Group(*_head(report, rate), *_stuck(report, con), *_descriptors(report, con),
                 *_regions(report, con, flags_detail),
                 *(Text(inert(c)) for c in changes or []))


def render_report(report: ProcessReport, con: Console, flags_detail: bool = False) -> None:
    con.print(process_view(report, con, flags_detail=flags_detail))


def widen(con: Console) -> Console:
    """Piped tables get room: addresses and paths folded over lines help nobody."""
    if not con.is_terminal:
        con.width = 240
    return con


# ----- every process --------------------------------------------------------------------------

def render_ps(report: PsReport, con: Console) -> None:
    from rich.table import Table
    from rich.text import Text

    if report.rows:
        t = Table(box=_box(con))
        for col in ("pid", "command", "uffds", *UFFD_MODE_ORDER, "pending", "stuck"):
            t.add_column(col)
        for r in report.rows:
            by = r.regions_by_mode
            t.add_row(Text(str(r.pid)), Text(inert(r.comm)), Text(str(r.uffds)),
                      *(Text(str(by.get(m, 0))) for m in UFFD_MODE_ORDER),
                      Text(str(r.pending)),
                      Text(str(r.stuck_threads), style="red" if r.stuck_threads else ""))
        con.print(t)
    else:
        con.print(Text(f"no process holds a userfaultfd ({report.scanned} processes scanned)"))
    for reason, n in report.unreadable.items():
        con.print(Text(f"{n} processes not readable: {reason}", style="yellow"),
                  soft_wrap=True)


# ----- watching -------------------------------------------------------------------------------

def _stamped(frame: procs.Frame) -> list[str]:
    import time

    stamp = time.strftime("%H:%M:%S", time.localtime(frame.at))
    return [f"{stamp} {c}" for c in frame.changes]


def watch(pid: int, *, interval: float, all_regions: bool, con: Console,
          count: int | None = None) -> str | None:
    """Draw procs.watch()'s frames until the process exits (returns the closing message) or
    ``count`` looks were made (returns None).

    On a terminal the view is redrawn in place; piped, the first look is printed whole and
    then one line per change, each stamped with the time, so a log shows what happened."""
    from rich.text import Text

    frames = procs.watch(pid, interval, all_regions, count)
    first = next(frames)
    if not con.is_terminal:
        render_report(first.report, con)
        for frame in frames:
            if frame.exited:
                return frame.exited
            for line in _stamped(frame):
                con.print(Text(inert(line)), soft_wrap=True)
        return None

    from rich.live import Live

    history: list[str] = []
    with Live(process_view(first.report, con), console=con, auto_refresh=False) as live:
        for frame in frames:
            if frame.exited:
                return frame.exited
            history[:] = (history + _stamped(frame))[-10:]
            live.update(process_view(frame.report, con, changes=history, rate=frame.rate),
                        refresh=True)
    return None
