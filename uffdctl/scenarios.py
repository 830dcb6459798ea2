"""The demo scenarios: what differs between `demo minor`, `demo missing` and `demo wp`.

The engine (demo.py) owns the fault loop, threads, timeouts, clean-up, verification and
statistics, as the kernel selftests' uffd-common.c does; this module is the table of cases,
as their uffd-unit-tests.c is.  What each scenario needs of the kernel is data: its register
mode (the features follow from abi.MODE_SUPPORT for the backing memory), the features it
asks for besides, and the ones an option adds.  What it does is a few small functions:
what the mapping holds before the first touch, and how a fault is resolved.
"""

from __future__ import annotations

import errno

from . import abi, demo, errors, memtypes, pagetables, uffd
from .demo import DemoConfig, Emit, Resolver, Run, Scenario, Step, Summary
from .demoneeds import DEMOS

# ----- what pagemap shows --------------------------------------------------------------------
# Every claim the narration makes about page tables is a reading of /proc/self/pagemap,
# taken before the touchers start (arm) or once they are done (collect): never on the fault
# path, where a pagemap walk would sit on the round trip being measured.

BEFORE = "before the first touch"
AFTER = "after the faults were resolved"


def _observe(run: Run, emit: Emit, phase: str, when: str, mapping: str, addr: int,
             expect: pagetables.Expect, frames_of: str = "") -> pagetables.Reading | None:
    """Read one mapping's entries, narrate what they show, keep the reading for the
    summary.  None when pagemap cannot be read here: then nothing is claimed."""
    try:
        reading = pagetables.read(phase, mapping, addr, run.area.pages, run.page_size, expect)
    except OSError as exc:
        cause = exc.strerror or str(exc)
        emit(Step(f"pagemap {when}: /proc/self/pagemap could not be read ({cause}): the "
                  f"{mapping} mapping's page tables are not shown", "pagetables_unreadable",
                  {"phase": phase, "mapping": mapping, "error": cause}))
        return None
    run.readings.append(reading)
    emit(Step(pagetables.describe(reading, when, expect, frames_of), "pagetables",
              reading.fields()))
    return reading


def _entries(run: Run) -> list[int]:
    """The registered mapping's raw entries, or the error a pagemap ioctl would raise."""
    try:
        return pagetables.read_entries(run.area.addr, run.area.pages, run.page_size)
    except OSError as exc:
        raise uffd.UffdError("pagemap", exc.errno or errno.EIO) from None


def _judge_readings(run: Run, summary: Summary) -> None:
    """A reading that contradicts the narration fails the run: the story was not true."""
    wrong = pagetables.disagreement(run.readings)
    if wrong and summary.error is None:
        summary.error = wrong


def _minor_prepare(run: Run, emit: Emit) -> None:
    area = run.area
    for i in range(area.pages):
        run.expected[i] = run.pattern(i)
        uffd.poke(area.alias + i * run.page_size, run.expected[i])
    emit(Step(f"wrote a distinct pattern into each of the {area.pages} pages through the plain "
              "mapping, into the memfd's page cache",
              "filled", {"pages": area.pages, "through": "plain mapping"}))


def _minor_resolver(run: Run, wake: bool) -> Resolver:
    area, ps = run.area, run.page_size
    # A resolve that wakes its thread is the bulk toucher's, which holds no interpreter lock
    # while it touches (demo._handle): the lock may be released through the call.
    cont = run.uffd.page_continuer(area.addr, ps,
                                   0 if wake else abi.UFFDIO_CONTINUE_MODE_DONTWAKE,
                                   release=wake)
    if not (run.cfg.modify or run.cfg.wrong):
        return Resolver(cont, "continue")  # the page cache holds the page already

    def resolve(index: int) -> None:
        alias = area.alias + index * ps
        if run.cfg.modify:
            # The handler may change what the faulting thread will see, through the plain
            # mapping.
            run.expected[index] = run.pattern(index, salt=0xC0DE)
            uffd.poke(alias, run.expected[index])
        if run.cfg.wrong:
            uffd.poke(alias, run.pattern(index, salt=0xBAD))  # not what was promised
        cont(index)
    return Resolver(resolve, "continue", modified=run.cfg.modify)


def _minor_arm(run: Run, emit: Emit) -> None:
    # The plain mapping wrote the pages (present); the registered one has not touched them.
    area = run.area
    _observe(run, emit, "before", BEFORE, "plain", area.alias, pagetables.Expect(True))
    _observe(run, emit, "before", BEFORE, "registered", area.addr, pagetables.Expect(False))


def _minor_collect(run: Run, summary: Summary, emit: Emit) -> None:
    # UFFDIO_CONTINUE maps the page the page cache already holds: the registered mapping's
    # pages are the plain mapping's page frames, where the reader may see frames at all.
    area = run.area
    plain = _observe(run, emit, "after", AFTER, "plain", area.alias, pagetables.Expect(True))
    frames = plain.frames if plain is not None else None
    _observe(run, emit, "after", AFTER, "registered", area.addr,
             pagetables.Expect(True, frames=frames), frames_of="plain")
    _judge_readings(run, summary)


def _minor_floor(run: Run, mt: memtypes.MemoryType, area: memtypes.Area) -> None:
    mt.map_alias(area)
    for i in range(area.pages):
        uffd.poke(area.alias + i * run.page_size, run.expected[i])


MINOR = Scenario(
    DEMOS["minor"], _minor_prepare, _minor_resolver,
    needs_alias=True, floor_prepare=_minor_floor, arm=_minor_arm, collect=_minor_collect,
    story="one memfd mapped twice; the page cache already holds the data, so a first touch "
          "of the registered mapping is a minor fault, resolved with UFFDIO_CONTINUE")


def _missing_check(cfg: DemoConfig) -> None:
    if cfg.zero and "zeropage" not in abi.mode_support(
            "missing", memtypes.MEMORY_BY_NAME[cfg.backing].kind).ioctls:  # type: ignore[union-attr]
        raise errors.UffdctlError(
            "--zero cannot be used with --backing hugetlb: hugetlbfs has no UFFDIO_ZEROPAGE "
            "(the kernel answers EINVAL and does not list it for hugetlb ranges)",
            "drop --zero (pages are filled with UFFDIO_COPY), or use --backing anon or shmem",
            errors.USAGE)


def _missing_prepare(run: Run, emit: Emit) -> None:
    ps = run.page_size
    for i in range(run.area.pages):
        run.expected[i] = bytes(ps) if run.cfg.zero else run.pattern(i)
    if run.cfg.zero and not run.cfg.wrong:
        emit(Step(f"nothing was written to the {run.area.pages} pages; each first touch will "
                  "be answered with UFFDIO_ZEROPAGE", "empty",
                  {"pages": run.area.pages, "resolve_with": "zeropage"}))
        return
    # UFFDIO_COPY copies from this process's memory: one scratch page, refilled per fault.
    run.source = uffd.mmap(ps, uffd.PROT_READ | uffd.PROT_WRITE,
                           uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS)
    run.stack.callback(uffd.munmap, run.source, ps)
    emit(Step(f"nothing was written to the {run.area.pages} pages; the handler will fill each "
              "on its first touch with UFFDIO_COPY from a scratch page holding that page's "
              "own pattern",
              "empty", {"pages": run.area.pages, "resolve_with": "copy"}))


def _missing_resolver(run: Run, wake: bool) -> Resolver:
    ps, u = run.page_size, run.uffd
    if run.cfg.zero and not run.cfg.wrong:
        mode = 0 if wake else abi.UFFDIO_ZEROPAGE_MODE_DONTWAKE
        return Resolver(lambda index: u.zeropage(run.area.page(index), ps, mode), "zeropage")
    mode = 0 if wake else abi.UFFDIO_COPY_MODE_DONTWAKE

    def resolve(index: int) -> None:
        if run.cfg.wrong:
            uffd.poke(run.source, run.pattern(index, salt=0xBAD))  # not what was promised
        else:
            uffd.poke(run.source, run.expected[index])
        u.copy(run.area.page(index), run.source, ps, mode)
    return Resolver(resolve, "copy")


def _missing_arm(run: Run, emit: Emit) -> None:
    _observe(run, emit, "before", BEFORE, "registered", run.area.addr, pagetables.Expect(False))


def _missing_collect(run: Run, summary: Summary, emit: Emit) -> None:
    # UFFDIO_COPY (or UFFDIO_ZEROPAGE: the shared zero page) mapped every page.
    _observe(run, emit, "after", AFTER, "registered", run.area.addr, pagetables.Expect(True))
    _judge_readings(run, summary)


MISSING = Scenario(
    DEMOS["missing"], _missing_prepare, _missing_resolver,
    check=_missing_check, arm=_missing_arm, collect=_missing_collect,
    story="nothing is mapped yet, so each first touch is a missing fault; the handler "
          "supplies the page with UFFDIO_COPY (or UFFDIO_ZEROPAGE)")


def _wp_prepare(run: Run, emit: Emit) -> None:
    # Populated first: a write-protect bit lives in a page table entry, so the pages must be
    # mapped before they are protected (WP_UNPOPULATED would lift that; not needed here).
    for i in range(run.area.pages):
        run.expected[i] = run.pattern(i)
        uffd.poke(run.area.page(i), run.expected[i])
    emit(Step(f"wrote a distinct pattern into each of the {run.area.pages} pages, to populate "
              "them before they are protected", "filled",
              {"pages": run.area.pages, "through": "registered mapping"}))


def _wp_arm(run: Run, emit: Emit) -> None:
    area = run.area
    if run.cfg.wp_async:
        # CRIU's way: protect by scanning, and fail loudly if the range is not async-WP.
        uffd.pagemap_scan(area.addr, area.addr + area.length,
                          flags=abi.PM_SCAN_WP_MATCHING | abi.PM_SCAN_CHECK_WPASYNC,
                          category_mask=abi.PAGE_IS["WPALLOWED"])
        emit(Step("PAGEMAP_SCAN with PM_SCAN_WP_MATCHING write-protected every page; with "
                  "WP_ASYNC the kernel resolves each write itself, no message is sent",
                  "protected", {"ioctl": "pagemap_scan", "pages": area.pages, "async": True}))
    else:
        run.uffd.writeprotect(area.addr, area.length, True)
        emit(Step("UFFDIO_WRITEPROTECT protected every page: a write now stops in a WP fault",
                  "protected", {"ioctl": "writeprotect", "pages": area.pages, "async": False}))
    _observe(run, emit, "before", "once write-protected, before the first write", "registered",
             area.addr, pagetables.Expect(True, wp=frozenset(range(area.pages))))
    emit(Step(f"the touchers will write to {len(run.targets)} of the {area.pages} pages: "
              f"{_page_list(run.targets)}", "chosen",
              {"pages": list(run.targets), "of": area.pages}))


def written_pages(cfg: DemoConfig) -> int:
    """How many pages the wp demo writes: --written, else half of them."""
    return min(cfg.pages, cfg.written if cfg.written is not None else max(1, cfg.pages // 2))


def expected_faults(cfg: DemoConfig) -> int:
    return written_pages(cfg) if cfg.mode == "wp" else cfg.pages


def _wp_choose(run: Run) -> list[int]:
    import random

    n = run.area.pages
    return sorted(random.Random(run.cfg.seed).sample(range(n), written_pages(run.cfg)))


def _wp_resolver(run: Run, wake: bool) -> Resolver:
    # Recording the page is the point of tracking; the engine wakes the writer afterwards
    # (or the ioctl does: wake).
    ps, u, addr = run.page_size, run.uffd, run.area.addr
    return Resolver(lambda index: u.writeprotect(addr + index * ps, ps, False, dontwake=not wake),
                    "writeprotect")


def _wp_collect(run: Run, summary: Summary, emit: Emit) -> None:
    area, written = run.area, sorted(run.target_set)
    # Lifting the protection (the handler's UFFDIO_WRITEPROTECT, or the kernel itself with
    # WP_ASYNC) clears the bit on the written pages only.
    after = _observe(run, emit, "after", AFTER, "registered", area.addr, pagetables.Expect(
        True, wp=frozenset(range(area.pages)) - run.target_set))
    found: dict[str, list[int]] = {}
    if run.cfg.wp_async:
        regions, _ = uffd.pagemap_scan(area.addr, area.addr + area.length,
                                       category_mask=abi.PAGE_IS["WRITTEN"],
                                       return_mask=abi.PAGE_IS["WRITTEN"])
        scanned = sorted({(addr - area.addr) // run.page_size for r in regions
                          for addr in range(r.start, r.end, run.page_size)})
        # Bit 57 of a pagemap entry is set while the page is still write-protected (the
        # reading above, else one read of all the entries: WP_ASYNC is 6.7, bit 57 5.14).
        entries = after.entries if after is not None else _entries(run)
        still = [bool(e & abi.PM_UFFD_WP) for e in entries]
        found = {"pagemap_scan": scanned,
                 "pagemap_bit57": [i for i in range(area.pages) if not still[i]]}
        run.faulted = {(0, i) for i in scanned}  # every write there was resolved by the kernel
        run.resolved = set(scanned)  # so their touches are round trips, not aborted ones
        summary.faults = len(scanned)
        summary.kinds["wp"] = len(scanned)
        summary.writes = len(scanned)
        emit(Step(f"PAGEMAP_SCAN found the written pages {_page_list(scanned)}; pagemap bit 57 "
                  f"is clear on {_page_list(found['pagemap_bit57'])}", "found",
                  {"pagemap_scan": scanned, "pagemap_bit57": found["pagemap_bit57"]}))
    else:
        found = {"faults": sorted(run.resolved)}
    summary.extra["written_pages"] = written
    summary.extra["found_pages"] = found
    wrong = {how: pages for how, pages in found.items() if pages != written}
    if wrong and summary.error is None:
        summary.error = "; ".join(f"{how} found {_page_list(pages)}, but {_page_list(written)} "
                                  "were written" for how, pages in wrong.items())
    _judge_readings(run, summary)


def _wp_floor(run: Run, mt: memtypes.MemoryType, area: memtypes.Area) -> None:
    for i in range(area.pages):
        uffd.poke(area.page(i), run.expected[i])


def _page_list(pages: list[int]) -> str:
    return "none" if not pages else ", ".join(str(p) for p in pages)


WP = Scenario(
    DEMOS["wp"], _wp_prepare, _wp_resolver,
    floor_prepare=_wp_floor, writes=True, arm=_wp_arm, choose=_wp_choose, collect=_wp_collect,
    story="every page is mapped and write-protected; each write to a protected page is a WP "
          "fault the handler records and resolves by removing the protection")

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (MINOR, MISSING, WP)}


def run(cfg: DemoConfig, emit: Emit) -> Summary:
    """Run the demo cfg.mode names, on the engine."""
    return demo.run_demo(SCENARIOS[cfg.mode], cfg, emit)
