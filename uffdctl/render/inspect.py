"""`uffdctl inspect` and `uffdctl ps` for people: rich tables and the live view of --watch.
Names, command lines and paths come from other processes: they reach the terminal only as
inert rich Text, never as markup (output.inert escapes control characters).

A long table (`inspect --all` of a process with tens of thousands of mappings) is streamed
(_Streamed): the same output as rich's Table, in linear time and bounded memory.

The JSON documents are built in render/documents.py (no rich on the --json path); they are
re-exported here for the callers that still import them from this module."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from .. import procs, smaps
from ..output import inert
from ..smaps import UFFD_MODE_ORDER, decode_flags, modes_of
from .documents import ps_json, report_json

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
    from rich.segment import Segment, Segments
    from rich.table import Table
    from rich.text import Text

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


# ----- long tables ----------------------------------------------------------------------------

Cell = tuple[str, str, bool]  # text (inert already), style, no_wrap: one table cell
STREAM_ROWS = 256  # a table with more rows is streamed (_Streamed), fewer: one rich Table
CHUNK_ROWS = 256  # rows per print when streamed: all the output held at any time
_CACHED = 4096  # distinct cell texts remembered while streaming (measures, padded cells)


def _text(cell: Cell) -> Text:
    from rich.text import Text

    text, style, no_wrap = cell
    return Text(text, style=style, no_wrap=no_wrap or None)


def _measure(text: str) -> tuple[int, int]:
    """(widest word, widest line) in cells: rich's Text.__rich_measure__, normalized as
    rich.measure.Measurement.get does (the first never above the second)."""
    if text.isascii() and text.isprintable():  # one line, a character per cell
        widest = len(text)
        words = text.split()
        return min(max(map(len, words)) if words else widest, widest), widest
    from rich.cells import cell_len

    lines = text.splitlines()
    widest = max(cell_len(line) for line in lines) if lines else 0
    words = text.split()
    return min(max(cell_len(w) for w in words) if words else widest, widest), widest


def _stand_ins(word: int, line: int) -> tuple[str, str]:
    """Two cells that together measure (word, line) as a column (word <= line)."""
    if not word:
        return "", ""  # no cell has a word: every one is empty
    return "x" * word, (("x" * word + " ") * (line // (word + 1) + 1))[:line]


class _Rows:
    """Rows drawn as rich's Table draws them: each cell laid out in its column's width with a
    space of padding on each side, the box's edges and dividers between the cells.

    A cell whose text fits its column on one line is padded by hand (spaces up to the width,
    in the cell's style, as rich's left justification pads); one that does not (folded over
    lines, or not printable) is laid out by rich with the column's settings, once for each
    distinct text.  A row is as high as its highest cell, the others filled with blank lines
    below (rich's vertical alignment "top")."""

    def __init__(self, widths: list[int], box: Any, columns: list[Any], console: Console,
                 options: ConsoleOptions) -> None:
        self.mid = (box.mid_left, box.mid_vertical, box.mid_right)
        self.foot = (box.foot_left, box.foot_vertical, box.foot_right)
        self.blank = [" " * width for width in widths]
        self.styled = console.color_system is not None  # else styles are not written
        self.style = lru_cache(_CACHED)(console.get_style)
        self.cells = [lru_cache(_CACHED)(self._layout(width - 2, column, console, options))
                      for width, column in zip(widths, columns, strict=True)]
        # _tall(): the lines below the first, for each set of tall cells.
        self.below: dict[tuple[object, ...], tuple[list[Segment], object]] = {}

    @staticmethod
    def _layout(room: int, column: Any, console: Console, options: ConsoleOptions
                ) -> Callable[[Cell], str | list[list[Segment]]]:
        from rich.cells import cell_len

        # What rich.Table gives a cell to lay out in (Padding then takes the two spaces off).
        cell_options = options.update(width=room, justify=column.justify,
                                      no_wrap=column.no_wrap, overflow=column.overflow,
                                      height=None, highlight=column.highlight)

        def layout(cell: Cell) -> str | list[list[Segment]]:
            """One line: the text and the spaces after it; else rich's lines of ``room``."""
            text = cell[0]
            if text.isprintable():
                left = room - (len(text) if text.isascii() else cell_len(text))
                if left >= 0:
                    return text + " " * left
            return console.render_lines(_text(cell), cell_options, pad=True)
        return layout

    def line(self, row: Sequence[Cell], last: bool) -> list[Segment]:
        """The row's lines (as segments, new lines included).  Unstyled text is gathered into
        one segment, as _Streamed.pieces() would gather it."""
        from rich.segment import Segment

        left, between, right = self.foot if last else self.mid
        laid = [layout(cell) for cell, layout in zip(row, self.cells, strict=True)]
        out: list[Segment] = []
        text = left
        end = len(laid) - 1
        tall = False
        for k, (cell, lines) in enumerate(zip(row, laid, strict=True)):
            if isinstance(lines, str):
                if cell[1] and self.styled:
                    out += (Segment(text + " "), Segment(lines, self.style(cell[1])))
                    text = " "
                else:
                    text += " " + lines + " "
            else:
                tall = True
                text = (_gather(out, text + " ", lines[0]) + " " if lines
                        else text + self.blank[k])
            text += between if k < end else right
        out.append(Segment(text + "\n"))
        if tall:
            # Below the first line only the tall cells show (the others are blank there):
            # those lines are drawn once for each set of tall cells (rows alike share them;
            # drawn for each row, they were ~2/3 of the table's time with --all, issue 17).
            # Keyed by the laid-out lines' identities (layout() caches them), held by the
            # value so that no id is reused while its entry is there.
            key = (left, *(id(lines) for lines in laid if not isinstance(lines, str)))
            below = self.below.get(key)
            if below is None:
                if len(self.below) >= _CACHED:
                    self.below.clear()
                below = self.below[key] = (self._below(laid, left, between, right), laid)
            out += below[0]
        return out

    def _below(self, laid: list[str | list[list[Segment]]], left: str, between: str,
               right: str) -> list[Segment]:
        """The lines of a tall row after its first (rich's vertical alignment "top")."""
        from rich.segment import Segment

        height = max(1, *(1 if isinstance(c, str) else len(c) for c in laid))
        end = len(laid) - 1
        out: list[Segment] = []
        text = ""
        for i in range(1, height):
            text += left
            for k, lines in enumerate(laid):
                if isinstance(lines, list) and i < len(lines):
                    text = _gather(out, text + " ", lines[i]) + " "
                else:
                    text += self.blank[k]
                text += between if k < end else right
            text += "\n"
        out.append(Segment(text))
        return out


def _gather(out: list[Segment], text: str, segments: list[Segment]) -> str:
    """Append ``segments`` to ``out`` after the unstyled ``text``, unstyled ones joined to
    the text around them; the unstyled text left at the end is returned, to go on with."""
    from rich.segment import Segment

    for segment in segments:
        if segment.style or segment.control:
            out += (Segment(text), segment)
            text = ""
        else:
            text += segment.text
    return text


class _Streamed:
    """A rich Table of many rows, printed as rich prints it, in linear time and bounded memory.

    rich.Table keeps every cell and lays each out through its renderer, twice with measuring
    (~1 ms a row here: 65,000 regions took 80 s and 640 MB).  This makes two passes over
    ``rows`` (a function giving a fresh iterator) and holds no row beyond the one at hand:

    1. each column measured as rich measures it: its widest word and its widest line (two
       numbers a column); rich then lays out a stand-in table with one row of each column's
       widest word and one of its widest line: the same column widths as the whole table;
    2. title, header and edges laid out by rich in a table of those widths, the rows drawn
       by _Rows, which asks rich only for the cells that do not fit on one line.

    The output is the same, line for line, as rich's Table of the same rows (tests/test_costs.py
    compares them).  ``table`` gives the empty Table (title, box, columns) to fill."""

    def __init__(self, table: Callable[[], Table], rows: Callable[[], Iterable[Sequence[Cell]]]
                 ) -> None:
        self.table, self.rows = table, rows

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.lines(console, options):
            yield from line

    def pieces(self, console: Console) -> Iterator[Segments]:
        """The table as renderables of CHUNK_ROWS rows each: printed one by one, the output
        is written as it is made."""
        from rich.segment import Segment, Segments

        chunk: list[Segment] = []
        plain: list[str] = []  # unstyled text is written as it is: one segment for a run
        for k, line in enumerate(self.lines(console, console.options), 1):
            for segment in line:
                if segment.style or segment.control:
                    if plain:
                        chunk.append(Segment("".join(plain)))
                        plain = []
                    chunk.append(segment)
                else:
                    plain.append(segment.text)
            if k % CHUNK_ROWS == 0:
                yield Segments([*chunk, Segment("".join(plain))])
                chunk, plain = [], []
        if chunk or plain:
            yield Segments([*chunk, Segment("".join(plain))])

    def lines(self, console: Console, options: ConsoleOptions) -> Iterator[list[Segment]]:
        """The table's lines as segments, new lines included: the title and header a line at
        a time, then a row at a time (a row may take several lines)."""
        options = options.update(height=None)  # as rich.Table lays out its parts
        count, ncols = 0, len(self.table().columns)
        words, longest = [0] * ncols, [0] * ncols
        measure = lru_cache(_CACHED)(_measure)  # most columns repeat a few texts
        for row in self.rows():
            count += 1
            for k, cell in enumerate(row):
                word, wide = measure(cell[0])
                if word > words[k]:
                    words[k] = word
                if wide > longest[k]:
                    longest[k] = wide
        widths = self._widths(console, options, list(zip(words, longest, strict=True)))
        if widths is None:  # no box, or a console too narrow: rich lays out everything
            everything = self.table()
            for row in self.rows():
                everything.add_row(*map(_text, row))
            yield from console.render_lines(everything, options, pad=False, new_lines=True)
            return
        fixed = self._fixed(widths)
        head = console.render_lines(fixed, options, pad=False, new_lines=True)
        yield from head[:-1]  # title, top edge, header, the line under it
        assert fixed.box is not None  # _widths() found one
        rows = _Rows(widths, fixed.box.substitute(options, safe=console.safe_box),
                     fixed.columns, console, options)
        for k, row in enumerate(self.rows()):
            yield rows.line(row, k == count - 1)
        yield head[-1]  # the bottom edge

    def _widths(self, console: Console, options: ConsoleOptions,
                columns: list[tuple[int, int]]) -> list[int] | None:
        """The width of each column (padding included) as rich would make them for all the
        rows: read off the top edge of the stand-in table drawn in ASCII2 ("+---+--+")."""
        from rich import box

        stand_in = self.table()
        if stand_in.box is None:
            return None
        stand_in.box, stand_in.title = box.ASCII2, None
        for row in zip(*(_stand_ins(*c) for c in columns), strict=True):
            stand_in.add_row(*row)
        top = "".join(s.text for s in console.render_lines(stand_in, options, pad=False)[0])
        widths = [len(part) for part in top[1:-1].split("+")]
        if len(widths) != len(columns) or min(widths) < 3:
            return None
        return widths

    def _fixed(self, widths: list[int]) -> Table:
        t = self.table()
        for column, width in zip(t.columns, widths, strict=True):
            column.width = width - 2  # the cell padding: one space on each side
        return t


# ----- one process ----------------------------------------------------------------------------

def _head(report: ProcessReport, rate: float | None) -> list[RenderableType]:
    from rich.text import Text

    head = Text()
    head.append(f"pid {report.pid} ", style="bold")
    head.append(inert(report.comm), style="bold")
    head.append(f"  state {inert(report.state)}")
    if rate is not None:
        # minflt counts every minor page fault of the process, not userfaultfd's MINOR faults.
        head.append(f"  page faults {rate:.0f}/s (minflt: all minor page faults of the "
                    "process, not only userfaultfd's)")
    parts: list[RenderableType] = [head]
    if report.cmdline:
        parts.append(Text("cmdline: " + inert(" ".join(report.cmdline))[:400], style="dim"))
    return parts


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    return f"{seconds // 3600:.0f}h{seconds % 3600 // 60:02.0f}m"


def _where(t: procs.StuckThread) -> str:
    """Where a stuck thread faulted, in one cell (plain text, inert)."""
    w = t.where
    if w is None:
        return f"? ({t.where_unknown})" if t.where_unknown else "?"
    place = "" if w.pc_mapping is None else f" in {w.pc_mapping or '[anonymous]'}"
    if w.nr == -1:
        text = f"user-mode fault at pc {w.pc:#x}{place}"
    else:
        args = ", ".join(f"{a:#x}" for a in w.args[:4])
        text = f"in {w.call}({args}, ...) called at pc {w.pc:#x}{place}"
    if len(w.regions) == 1:
        (a, b), = w.regions
        text += f"; region {a:x}-{b:x} ({w.regions_from})"
    elif w.regions:
        spans = ", ".join(f"{a:x}-{b:x}" for a, b in w.regions[:2])
        text += (f"; one of {len(w.regions)} regions ({w.regions_from}: {spans}"
                 + (", ..." if len(w.regions) > 2 else "") + ")")
    return inert(text)


VERDICT_STYLE = {"gone": "bold red", "stopped": "bold red", "not-reading": "red",
                 "unknown": "yellow", "reading": "green"}


def _service(report: ProcessReport) -> list[RenderableType]:
    """Who answers the process's faults and, when something waits, whether anyone is there."""
    from rich.text import Text

    s = report.service
    if s is None:
        return []
    out: list[RenderableType] = []
    others = s.handlers
    if others:
        how = {"ino": "same fdinfo ino", "kcmp": "kcmp says one file",
               "inferred": "inferred: /proc does not link a process's memory to a descriptor; "
                           "the only userfaultfd elsewhere that fits",
               "candidates": "not paired: any of these may be it"}.get(s.matched_by, s.matched_by)
        served = ", ".join(f"pid {h.pid} ({inert(h.comm)}) fd {h.fd}" for h in others)
        out.append(Text(f"served by {served} ({how})", style="bold"))
    elif s.matched_by == "own":
        out.append(Text("served by its own descriptor(s): "
                        + ", ".join(f"fd {h.fd}" for f in s.files for h in f.held_by(s.pid))))
    if s.verdict:
        line = Text(f"{s.verdict}: ", style=VERDICT_STYLE.get(s.verdict, ""))
        line.append(inert(s.cause))
        out.append(line)
        if s.fix:
            out.append(Text(f"  fix: {inert(s.fix)}", style="dim"))
    return out


def _stuck(report: ProcessReport, con: Console) -> list[RenderableType]:
    from rich.text import Text

    unseen: list[RenderableType] = []
    if report.unseen:
        u = report.unseen
        unseen = [Text(f"  {u.threads} sleeping thread(s) could not be checked for a stuck fault: "
                       f"{inert(u.cause)}; {inert(u.fix)}", style="yellow")]
    if not report.stuck_threads:
        return unseen + _service(report)
    t = _table(con, "threads stuck in a userfaultfd fault",
               ["tid", "name", "state", "wchan", "not run for", "where"], "bold red")
    for s in report.stuck_threads:
        t.add_row(Text(str(s.tid)), Text(inert(s.comm)), Text(inert(s.state)),
                  Text(inert(s.wchan)), Text(_duration(s.stuck_for)), Text(_where(s)))
    parts: list[RenderableType] = [t]
    if report.service is None:
        waiting = [f"fd {u.fd}" for u in report.uffds if u.total]
        parts.append(Text(f"  {len(report.stuck_threads)} thread(s) wait for a fault nobody has "
                          "resolved" + (f" (on {', '.join(waiting)})" if waiting else ""),
                          style="red"))
    parts.append(Text("  not run for: since the thread last ran (se.exec_start in "
                      "/proc/PID/task/TID/sched); the fault address itself is not in /proc",
                      style="dim"))
    return [*parts, *unseen, *_service(report)]


def _descriptors(report: ProcessReport, con: Console) -> list[RenderableType]:
    from rich.text import Text

    if not report.uffds:
        return [Text("no userfaultfd descriptors open in this process")]
    cols = ["fd", "pending", "total", "features"]
    if report.surveyed:
        cols += ["serves", "also held by", "read by"]
    t = _table(con, "userfaultfd descriptors", cols)
    for u in report.uffds:
        feats = " ".join(u.features) or ("none" if u.info.initialized else
                                         "UFFDIO_API not done")
        row = [Text(str(u.fd)), Text(str(u.pending)), Text(str(u.total)), Text(feats)]
        if report.surveyed:
            f = report.serving.get(u.fd)
            if f is None or f.serves is None:
                serves = "?"
            elif f.serves == report.pid:
                serves = "this process"
            else:
                serves = (f"pid {f.serves} ({inert(f.serves_comm)})"
                          + (" (inferred)" if f.serves_how == "inferred" else ""))
            also = ", ".join(f"pid {h.pid} ({inert(h.comm)}) fd {h.fd}"
                             for h in (f.holders if f else []) if h.pid != report.pid)
            read = ", ".join(f"thread {r.tid} in {r.call}" + (f" via {r.via}" if r.via else "")
                             for h in (f.held_by(report.pid) if f else []) for r in h.readers)
            row += [Text(serves), Text(also or "-"), Text(inert(read) or "nobody")]
        t.add_row(*row)
    return [t, Text("  " + TOTAL_NOTE, style="dim")]


def _region_rows(report: ProcessReport, flags_detail: bool
                 ) -> Callable[[], Iterator[list[Cell]]]:
    """The rows of the regions table, a fresh iterator each call.  What regions share (their
    VmFlags, path, size) is spelled out once (a bounded cache), not once a region."""

    def rows() -> Iterator[list[Cell]]:
        @lru_cache(_CACHED)
        def by_flags(flags: tuple[str, ...]) -> tuple[Cell, ...]:
            modes = modes_of(flags)
            cells: tuple[Cell, ...] = (("+".join(modes) or "-", "bold" if modes else "", False),)
            if flags_detail:
                cells += ((inert(" ".join(f"{m}={name.removeprefix('VM_') or '?'}"
                                          for m, name, _ in decode_flags(list(flags)))),
                           "", False),)
            return cells

        size = lru_cache(_CACHED)(_size)
        owners = report.owners
        elsewhere = _elsewhere(report)
        # Every cell but the addresses and the size follows from the region's shape (flags,
        # path, inode, file system: its memory type and owner too): made once a shape.
        alike: dict[Hashable, tuple[Cell, ...]] = {}
        for r in report.regions:
            shape = smaps.shape(r)
            cells = alike.get(shape)
            if cells is None:
                owner = owners.by_shape(shape)
                modes, *flags = by_flags(tuple(r.flags))
                held = owner.text() if owner and (owner.fds or not elsewhere) else (
                    elsewhere if owner else "-")
                if len(alike) >= _CACHED:
                    alike.clear()
                cells = alike[shape] = ((r.memory, "", False), modes, (held, "", False),
                                        *flags, (inert(r.path), "", False))
            yield [(f"{r.start:x}-{r.end:x}", "", True), (size(r.end - r.start), "", False),
                   *cells]
    return rows


def _elsewhere(report: ProcessReport) -> str:
    """For a region no descriptor of the process fits: the descriptors elsewhere serving it."""
    s = report.service
    if s is None or not s.handlers:
        return ""
    mark = "?" if s.matched_by in ("inferred", "candidates") else ""
    return ", ".join(f"pid {h.pid} fd {h.fd}{mark}" for h in s.handlers)


def _regions(report: ProcessReport, con: Console, flags_detail: bool) -> list[RenderableType]:
    from rich.text import Text

    title = "regions" if report.all_regions else "registered regions"
    if not report.regions:
        return [Text(f"no {title}")]
    cols = ["start-end", "size", "memory", "uffd modes", "descriptor"]
    cols += ["flags", "path"] if flags_detail else ["path"]

    rows = _region_rows(report, flags_detail)
    t: RenderableType
    if len(report.regions) > STREAM_ROWS:
        t = _Streamed(lambda: _table(con, title, cols), rows)
    else:
        t = table = _table(con, title, cols)
        for row in rows():
            table.add_row(*map(_text, row))
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
    """The report, as process_view() draws it; a long table (_Streamed) is written as it is
    made, CHUNK_ROWS lines at a time, the parts around it each as one group."""
    from rich.console import Group

    parts = [*_head(report, None), *_stuck(report, con), *_descriptors(report, con),
             *_regions(report, con, flags_detail)]
    group: list[RenderableType] = []
    for part in parts:
        if not isinstance(part, _Streamed):
            group.append(part)
            continue
        if group:
            con.print(Group(*group))
            group = []
        for piece in part.pieces(con):
            con.print(piece, crop=False)  # no line is wider than the table
    if group:
        con.print(Group(*group))


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
                      Text(str(r.stuck_threads) + ("?" if r.unseen_threads else ""),
                           style="red" if r.stuck_threads else ""))
        con.print(t)
        for r in report.rows:
            line = _handler_line(r)
            if line is not None:
                con.print(line, soft_wrap=True)
        unseen = sum(r.unseen_threads for r in report.rows)
        if unseen:
            con.print(Text(f"?: {unseen} sleeping thread(s) could not be checked for a stuck "
                           "fault; `uffdctl inspect PID` says why", style="yellow"),
                      soft_wrap=True)
    else:
        con.print(Text("no process holds a userfaultfd or waits in a fault "
                       f"({report.scanned} processes scanned)"))
    if report.unseen_elsewhere:
        u = report.unseen_elsewhere
        con.print(Text(f"{u.threads} sleeping thread(s) of processes holding no userfaultfd "
                       f"could not be checked for a stuck fault: {inert(u.cause)}; "
                       f"{inert(u.fix)}", style="yellow"), soft_wrap=True)
    for reason, n in report.unreadable.items():
        con.print(Text(f"{n} processes not readable: {reason}", style="yellow"),
                  soft_wrap=True)


def _handler_line(r: procs.PsRow) -> Text | None:
    """Under the table, for a process with something waiting or serving another: how long
    it is stuck, who answers and whether anyone is there (gone, stopped, not-reading,
    reading, unknown); for a handler, whom it serves."""
    from rich.text import Text

    s = r.service
    parts = []
    if r.stuck_threads:
        parts.append(f"{r.stuck_threads} thread(s) stuck, the longest for "
                     f"{_duration(r.stuck_for)}")
    if s is not None and s.verdict is not None:
        others = s.handlers
        mark = " (inferred)" if s.matched_by == "inferred" else (
            " (any of these)" if s.matched_by == "candidates" else "")
        who = ("served by " + ", ".join(f"pid {h.pid} ({inert(h.comm)}) fd {h.fd}"
                                        for h in others) + mark if others
               else "served by its own descriptor" if s.files else "no descriptor found")
        parts.append(f"{s.verdict}: {who}")
    if r.serves:
        parts.append("serves " + ", ".join(f"pid {pid} (fd {fd})" for fd, pid in r.serves))
    if not parts:
        return None
    line = Text(f"{r.pid} {inert(r.comm)}: ", style="bold")
    line.append("; ".join(parts), style=VERDICT_STYLE.get(s.verdict or "", "") if s else "")
    return line


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
