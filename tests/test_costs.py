"""Costs that must stay linear and bounded, checked by what the code does, never by the clock
(speed is measured in benchmarks/): a long `inspect --all` table is streamed, yet the same
line for line as rich's table; smaps is parsed piece by piece into small regions; the demo
verifies each page in constant time."""

from __future__ import annotations

import io
import os
import random
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from rich.console import Console
from smaps_util import short_reads

from uffdctl import abi, demo, fdinfo, memtypes, procs, smaps, uffd
from uffdctl.render import inspect as view

# Paths that fold, are wide, combine, carry control characters or markup: every way a cell
# can leave the one-line path that the streamed table draws by hand.
ODD_PATHS = ["/usr/lib/x86_64-linux-gnu/" + "libverylongname" * 12 + ".so", "/path with  spaces",
             "/中文/路径/文件.so", "/combining/e\u0301", "/tab\there", "/nb\u00a0sp",
             "[anon:\x1b[31mred]", "/emoji/\U0001f600", "/" + "中" * 90, "a " * 60,
             "/x\u2028y", "[bold]markup[/bold]", "/memfd:uffdctl (deleted)", "[heap]"]
FLAG_SETS = [["rd", "wr", "mr", "mw", "me", "ac"], ["rd", "mr", "mw", "me"],
             ["rd", "ex", "mr", "mw", "me"], ["rd", "wr", "sh", "mr", "mw", "me", "ms"],
             ["rd", "wr", "mr", "mw", "me", "ac", "um"], ["rd", "wr", "sh", "mr", "mw", "ms", "ui"],
             ["rd", "wr", "mr", "mw", "me", "ac", "um", "uw"], ["rd", "wr", "ht", "sh", "ms", "zz"]]


def smaps_text(n: int, seed: int = 1, distinct_paths: bool = False) -> str:
    """/proc/PID/smaps as 6.18 prints it, for ``n`` generated regions."""
    rng = random.Random(seed)
    out, addr = [], 0x7F0000000000
    for k in range(n):
        size = rng.choice([1, 1, 1, 2, 16, 512]) * 4096
        path = (f"/srv/file-{k}" if distinct_paths else
                rng.choice(ODD_PATHS) if rng.random() < 0.1 else rng.choice(["", "", "/usr/bin/x"]))
        inode = rng.randrange(1, 1 << 20) if path.startswith("/") else 0
        header = f"{addr:x}-{addr + size:x} {rng.choice(['rw-p', 'r--p', 'rw-s'])} 00000000 " \
                 f"00:{rng.randrange(256):02x} {inode}"
        out.append(header + (" " * (26 - len(header) % 26) + path if path else " "))
        out.append(f"Size:           {size // 1024:8} kB")
        for name in ("KernelPageSize", "MMUPageSize", "Rss", "Pss", "Anonymous"):
            out.append(f"{name + ':':16}{rng.choice([0, 4, size // 1024]):8} kB")
        out.append("VmFlags: " + "".join(f + " " for f in rng.choice(FLAG_SETS)))
        addr += size + rng.choice([0, 4096])
    return "\n".join(out) + "\n"


def report(text: str) -> procs.ProcessReport:
    regions = smaps.parse_smaps(text)
    uffds = [fdinfo.UffdDescriptor(3, fdinfo.parse_fdinfo("API:\taa:80000100:0\n")),
             fdinfo.UffdDescriptor(4, fdinfo.parse_fdinfo("API:\taa:80000400:0\n"))]
    rep = procs.ProcessReport(42, "vm", ["vm"], "S", regions, uffds, [], 0, True)
    rep.owners = procs.attribute(regions, uffds)
    return rep


def console(out: io.StringIO, terminal: bool, width: int) -> Console:
    # As output.console() makes them: ASCII2 boxes piped, styles only on a terminal.
    return view.widen(Console(file=out, width=width, force_terminal=terminal,
                              no_color=not terminal, color_system="truecolor" if terminal else None,
                              highlight=False, emoji=False, markup=True))


def rendered(rep: procs.ProcessReport, terminal: bool, width: int, streamed: bool,
             monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(view, "STREAM_ROWS", 0 if streamed else 1 << 30)
    out = io.StringIO()
    view.render_report(rep, console(out, terminal, width), flags_detail=True)
    return out.getvalue()


# ----- inspect --all as a table ----------------------------------------------------------------

@pytest.mark.parametrize(("terminal", "width"), [(False, 240), (True, 240), (True, 100),
                                                 (False, 50), (True, 14)])
def test_streamed_table_is_richs_table_line_for_line(terminal: bool, width: int,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A generated smaps of 700 regions (registered ones with both descriptors as owners,
    # folded paths and flags, wide characters, control characters) drawn by rich's Table and
    # streamed: the same bytes, colours included, at widths where columns collapse too.
    rep = report(smaps_text(700))
    assert any(r.registered for r in rep.regions) and len(rep.regions) == 700
    whole = rendered(rep, terminal, width, streamed=False, monkeypatch=monkeypatch)
    streamed = rendered(rep, terminal, width, streamed=True, monkeypatch=monkeypatch)
    assert streamed.splitlines() == whole.splitlines()
    assert streamed == whole


def test_small_tables_are_still_one_rich_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # The README's samples and test_inspect compare these: up to STREAM_ROWS rows nothing
    # changes; past it the regions table is streamed.
    small, large = report(smaps_text(view.STREAM_ROWS)), report(smaps_text(view.STREAM_ROWS + 1))
    con = console(io.StringIO(), False, 240)
    assert not any(isinstance(p, view._Streamed) for p in view._regions(small, con, True))
    assert any(isinstance(p, view._Streamed) for p in view._regions(large, con, True))


class Counted(list[smaps.Region]):
    """report.regions that counts the regions handed out, over every pass."""

    handed = 0

    def __iter__(self) -> Iterator[smaps.Region]:
        for r in super().__iter__():
            self.handed += 1
            yield r


class Sink(io.StringIO):
    """A console file that records, at each write, how many regions had been handed out."""

    def __init__(self, regions: Counted) -> None:
        super().__init__()
        self.regions = regions
        self.writes: list[tuple[int, int]] = []

    def write(self, s: str) -> int:
        self.writes.append((self.regions.handed, s.count("\n| 7f")))  # rows begun
        return super().write(s)


def test_streamed_table_writes_as_it_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rows are made one at a time (two passes: measure, then draw) and written CHUNK_ROWS
    # rows at a time: output never waits for more than one chunk of rows, so what is held
    # does not grow with the table (rich's Table holds every cell and all the output).
    n = 3000
    rep = report(smaps_text(n))
    rep.regions = regions = Counted(rep.regions)
    sink = Sink(regions)
    view.render_report(rep, console(sink, False, 240), flags_detail=True)
    # The first write (the head of the report) follows the look for a registered region.
    before = sink.writes[0][0]
    assert regions.handed == before + 2 * n  # measured once, drawn once: no per-row rework
    table = [(handed - before - n, lines) for handed, lines in sink.writes[1:]]
    assert len(table) >= n // view.CHUNK_ROWS
    written = 0
    for drawn, rows in table:
        assert rows <= view.CHUNK_ROWS
        written += rows
        assert drawn - written <= view.CHUNK_ROWS  # drawn but not written yet
    assert sink.getvalue().count("\n| 7f") == n


def _peak_while_rendering(n: int, monkeypatch: pytest.MonkeyPatch) -> int:
    rep = report(smaps_text(n, seed=n, distinct_paths=True))  # nothing shared to cache
    con = console(io.StringIO(), True, 240)
    con.file = open(os.devnull, "w")  # noqa: SIM115 (closed below)
    try:
        tracemalloc.start()
        view.render_report(rep, con, flags_detail=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        con.file.close()


def test_streamed_table_memory_does_not_grow_with_rows(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    # Allocation counted by tracemalloc (deterministic, not timed): four times the rows, all
    # with distinct paths, and the peak while drawing stays put; the bounded caches are made
    # small so that both sizes fill them.
    monkeypatch.setattr(view, "STREAM_ROWS", 0)
    monkeypatch.setattr(view, "_CACHED", 64)
    small, large = (_peak_while_rendering(n, monkeypatch) for n in (1500, 6000))
    assert large < small * 1.5, (small, large)


# ----- smaps for every region -------------------------------------------------------------------

def test_every_region_read_piece_by_piece_is_the_whole_parse() -> None:
    text = smaps_text(400)
    raw = text.encode()
    whole = smaps.parse_smaps(text)
    rng = random.Random(3)
    for chunk in (1, 7, 300, 4096, 1 << 18):
        pieces = smaps.scan_all(short_reads(raw, rng, 900), chunk=chunk)
        assert [(r.start, r.end, r.perms, r.offset, r.dev, r.inode, r.path, r.flags,
                 dict(r.sizes_kb)) for r in pieces] == \
            [(r.start, r.end, r.perms, r.offset, r.dev, r.inode, r.path, r.flags,
              dict(r.sizes_kb)) for r in whole]


def test_regions_are_small_and_share_what_they_have_in_common() -> None:
    regions = smaps.parse_smaps(smaps_text(300))
    assert not hasattr(regions[0], "__dict__")  # slots: no dict per region
    index = {id(r.sizes_kb._index) for r in regions}  # type: ignore[attr-defined]
    assert len(index) == 1  # one set of field names for all of them
    assert len({id(r.path) for r in regions}) == len({r.path for r in regions})
    assert all(r.sizes_kb["Size"] * 1024 == r.length for r in regions)
    assert dict(regions[0].sizes_kb) == {k: regions[0].sizes_kb[k] for k in regions[0].sizes_kb}


def test_inspect_all_reads_a_real_process_as_the_whole_parse() -> None:
    def key(regions: list[smaps.Region]) -> list[tuple[Any, ...]]:
        return [(r.start, r.end, r.path, r.flags, sorted(r.sizes_kb)) for r in regions]

    child = subprocess.Popen(["sleep", "60"])
    try:
        for _ in range(200):  # until its maps stop changing (the loader is done)
            with open(f"/proc/{child.pid}/smaps") as f:
                whole = key(smaps.parse_smaps(f.read()))
            got = key(procs.inspect_process(child.pid, all_regions=True).regions)
            if got == whole and len(got) > 5:  # right after exec only the stack is mapped:
                break                              # wait for the loader too
            time.sleep(0.01)
    finally:
        child.kill()
        child.wait()
    assert got == whole and len(got) > 5


# ----- the demo's verification -----------------------------------------------------------------

class Targets(list[int]):
    """run.targets that counts every element read from it."""

    reads = 0

    def __iter__(self) -> Iterator[int]:
        for i in super().__iter__():
            self.reads += 1
            yield i

    def __getitem__(self, key: Any) -> Any:
        got = super().__getitem__(key)
        self.reads += len(got) if isinstance(got, list) else 1
        return got

    def __contains__(self, item: object) -> bool:
        self.reads += len(self)  # a list is searched from the start
        return super().__contains__(item)


def _verify(pages: int, threads: int, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """Touch (write) and verify ``pages`` pages of a plain anonymous mapping as the demo's
    touchers do; (elements read from run.targets, pages compared)."""
    compared: list[int] = []
    real_compare = uffd.compare

    def compare(addr: int, expected: bytes) -> bool:
        compared.append(addr)
        return real_compare(addr, expected)
    monkeypatch.setattr(uffd, "compare", compare)
    mt = memtypes.MEMORY_BY_NAME["anon"]
    ps = mt.page_size(None)
    area = mt.allocate(pages, ps)
    try:
        with ExitStack() as stack:
            cfg = demo.DemoConfig(mode="missing", backing="anon", pages=pages, threads=threads,
                                  write=True)
            run = demo.Run(cfg, area, None, stack, write=True)  # type: ignore[arg-type]
            for i in range(pages):
                run.expected[i] = run.pattern(i)
                uffd.poke(area.page(i), run.expected[i])
            run.targets = targets = Targets(range(0, pages, 2))  # as wp's choice: half
            touchers = demo._Touchers(run, cfg, None)
            touchers.start()
            assert touchers.join(60)
            assert not touchers.errors and not touchers.mismatched
            assert touchers.verified == set(range(pages))
            return targets.reads, len(compared)
    finally:
        mt.release(area)


def test_demo_verification_is_linear_in_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # Counted in work done, not seconds: each page compared once a thread, and run.targets
    # read a bounded number of times a page (it was read whole for every page verified:
    # quadratic, 20,000 pages outlasted the 5 s timeout and the demo failed).
    for pages, threads in ((1000, 1), (4000, 1), (4000, 3)):
        reads, compared = _verify(pages, threads, monkeypatch)
        assert compared == pages * threads
        assert reads <= 2 * pages * threads, (pages, threads, reads)


def test_run_target_set_follows_the_targets() -> None:
    area = memtypes.Area("anon", 0x10000, 8 * 4096, 4096)
    with ExitStack() as stack:
        run = demo.Run(demo.DemoConfig(pages=8), area, None, stack, write=True)  # type: ignore[arg-type]
        assert run.target_set == frozenset(range(8))
        run.expected = [run.pattern(i) for i in range(8)]
        run.targets = [1, 5]
        assert run.target_set == {1, 5}
        assert run.after_touch(5)[:1] == demo.TOUCH_BYTE and run.after_touch(4) == run.pattern(4)
        run.write = False
        assert run.after_touch(5) == run.pattern(5)
    assert abi.REGISTER_MODES  # the demo's modes are what the ABI lists
