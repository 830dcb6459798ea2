"""The demo engine: register a mapping, let threads fault on it, resolve every fault from
userspace, verify every byte, and measure the round trip against the kernel's own fault.

One engine serves every mode.  A :class:`Scenario` says what differs between them (what the
mapping holds before the first touch, which features and register mode to ask for, and how
a fault is resolved); the engine owns the rest: the fault loop, timeouts, CPU placement,
Ctrl-C, clean-up, verification and the statistics.  It never prints: every step and fault
is handed to the ``emit`` callback as a dataclass, and the result is a :class:`Summary`.

Threads: the handler runs in the calling (main) thread so that Ctrl-C lands in it; touchers
are Python threads that touch pages through uffd.touch_read/touch_write/compare, which run
with the interpreter lock released, so a toucher blocked in a fault never starves the
handler.
"""

from __future__ import annotations

import errno
import gc
import os
import select
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import abi, advice, errors, hugepages, memtypes, pagetables, support, uffd
from .demoneeds import DEFAULT_PAGES, DemoNeeds
from .signals import GuardedExitStack, deferred_sigint, main_thread_only

if TYPE_CHECKING:
    from . import ioctl_reasons

MiB = 1 << 20


@dataclass
class DemoConfig:
    mode: str = "minor"  # the scenario name: minor, missing, wp
    backing: str = "hugetlb"  # a memtypes name: hugetlb, shmem, anon, ...
    pages: int = DEFAULT_PAGES
    huge_page_size: int | None = None  # bytes; None: the default huge page size
    threads: int = 1
    write: bool = False  # touch by writing instead of reading
    modify: bool = False  # the handler changes the contents before resolving
    zero: bool = False  # missing: resolve with UFFDIO_ZEROPAGE instead of UFFDIO_COPY
    wp_async: bool = False  # wp: UFFD_FEATURE_WP_ASYNC, written pages found by PAGEMAP_SCAN
    written: int | None = None  # wp: how many pages are written (None: half of them)
    seed: int = 1  # wp: which pages are written (a seeded random choice)
    cpus: str = "same"  # same, spread, any
    # bulk: a reading toucher reads all its pages in one libc call (uffd.touch_read_pages),
    # timed as a whole: the per-fault cost.  page: one call per page, each timed: the
    # per-touch round trips.  A writing run touches page by page either way.
    touch: str = "bulk"
    timeout: float = 5.0  # seconds without progress before the run is aborted
    reserve: bool = True  # as root, reserve the huge pages the run needs
    wrong: bool = False  # test hook: resolve with other contents than promised
    stall: bool = False  # test hook: never resolve, to exercise the timeout path


# ----- events --------------------------------------------------------------------------------

@dataclass
class Step:
    """A narrated step of the story: ``text`` for people, ``name`` and ``fields`` for programs
    (STEPS says which fields each name carries and their JSON types; uffdctl-demo(1) lists
    them)."""

    text: str
    name: str = "note"
    fields: dict[str, object] = field(default_factory=dict)
    event: str = "step"


# Every step a demo emits: name -> (what it says, {field: JSON Schema type}).  The one table
# the JSON schema (render/documents.STEP_SCHEMA), the man page and the tests are checked
# against.  A field that is sometimes unknown has type [T, "null"].
_INT, _STR, _BOOL = "integer", "string", "boolean"
_INTS = {"type": "array", "items": {"type": "integer"}}
_STRS = {"type": "array", "items": {"type": "string"}}
STEPS: dict[str, tuple[str, dict[str, object]]] = {
    "opened": ("a userfaultfd was opened", {"method": _STR}),
    "api": ("UFFDIO_API: the features asked for (those the run needs and the kernel offers)",
            {"features": _STRS, "features_mask": _INT}),
    "hugepages_recovered": ("huge pages a killed uffdctl run left in the pool: given back, "
                            "or what is left and the command that gives it back",
                            {"pid": _INT, "size_kb": _INT, "pages": _INT, "given_back": _INT,
                             "left": _INT, "fix": _STR}),
    "hugepages_available": ("enough free huge pages: none reserved",
                            {"size_kb": _INT, "available": _INT, "needed": _INT}),
    "hugepages_reserved": ("the pool was grown by what was missing (given back at the end)",
                           {"size_kb": _INT, "added": _INT, "nr_before": _INT,
                            "nr_after": _INT}),
    "mapped": ("the memory was mapped (twice for minor: alias_address is the plain mapping)",
               {"memory": _STR, "kind": _STR, "pages": _INT, "page_size": _INT,
                "length": _INT, "address": _INT, "alias_address": [_INT, "null"]}),
    "filled": ("what the pages hold before the first touch, written through which mapping",
               {"pages": _INT, "through": _STR}),
    "empty": ("nothing is mapped; how the handler will supply each page",
              {"pages": _INT, "resolve_with": _STR}),
    "registered": ("UFFDIO_REGISTER: the mode, the range and the ioctls the kernel offers "
                   "on it",
                   {"mode": _STR, "address": _INT, "length": _INT, "ioctls": _STRS,
                    "ioctls_mask": _INT}),
    "ioctl_difference": ("one per range ioctl this kernel has that the range was not offered "
                         "(status missing), or was offered and is refused on this memory "
                         "(status refused), with the reason and the kernel source "
                         "(abi.IOCTL_DIFFERENCES)",
                         {"ioctl": _STR, "status": _STR, "reason": _STR,
                          "errno": [_STR, "null"], "since": [_STR, "null"],
                          "source": [_STR, "null"]}),
    "protected": ("every page was write-protected (by UFFDIO_WRITEPROTECT, or PAGEMAP_SCAN "
                  "with --async)", {"ioctl": _STR, "pages": _INT, "async": _BOOL}),
    "chosen": ("the pages the touchers will write (wp)", {"pages": _INTS, "of": _INT}),
    "pagetables": ("what /proc/self/pagemap showed for one mapping (plain or registered) "
                   "before the first touch (wp: once protected) or after the faults were "
                   "resolved: pages present, pages with the uffd-wp bit (null: the kernel "
                   "has no such bit, before 5.14), pages at the plain mapping's page frame "
                   "(null: not compared, or frames hidden without CAP_SYS_ADMIN), and the "
                   "pages that are not as the demo says",
                   {"phase": _STR, "mapping": _STR, "address": _INT, "length": _INT,
                    "pages": _INT, "page_size": _INT, "present": _INT, "swapped": _INT,
                    "uffd_wp": [_INT, "null"], "same_frame": [_INT, "null"],
                    "pfn_visible": _BOOL, "unexpected": _INTS}),
    "pagetables_unreadable": ("/proc/self/pagemap could not be read: nothing is claimed "
                              "about that mapping's page tables",
                              {"phase": _STR, "mapping": _STR, "error": _STR}),
    "touching": ("the touchers start: how many threads, reading or writing, where they run, "
                 "and how they touch (bulk: each thread's pages in one call; page: one call a "
                 "page, each timed)",
                 {"threads": _INT, "write": _BOOL, "pages": _INT, "cpus": _STR,
                  "cpu_note": _STR, "touch": _STR}),
    "found": ("wp --async: the written pages as PAGEMAP_SCAN and pagemap bit 57 found them",
              {"pagemap_scan": _INTS, "pagemap_bit57": _INTS}),
    "aborted": ("no progress within the timeout: the run was aborted",
                {"timeout_s": "number", "unresolved": _INT}),
    "verified": ("every byte compared with what it must hold",
                 {"bytes": _INT, "pages": _INT, "mismatched_pages": _INTS}),
    "floor": ("the same touch on an unregistered mapping (the kernel's own fault), or why "
              "it was left out", {"measured": _BOOL}),
}


# slots: one Fault is made per fault, on the touching thread's time on one CPU, and callers
# may keep them all; without a dict each is half the size and quicker to make.
@dataclass(slots=True)
class Fault:
    page: int
    address: int
    flags: int
    flag_names: list[str]
    kind: str
    tid: int
    resolved_with: str
    modified: bool
    # From taking the message (read() returned) to the resolving ioctl's return.  The
    # faulting thread is woken only after it (_handle): within that thread's round trip.
    handle_ns: int
    seq: int  # 1-based count of faults so far
    duplicate: bool = False  # another thread's message for a page already resolved
    event: str = "fault"


@dataclass
class Summary:
    mode: str
    backing: str
    pages: int
    page_size: int
    threads: int
    cpus: str
    cpu_note: str
    uffd_method: str
    faults: int = 0  # distinct pages that faulted
    messages: int = 0  # fault messages read (several threads may fault on one page)
    kinds: dict[str, int] = field(default_factory=dict)  # minor/missing/wp -> faults
    writes: int = 0
    verified_bytes: int = 0
    mismatched_pages: list[int] = field(default_factory=list)
    # Round trip of each faulting touch whose page the handler resolved, in the toucher's
    # view: from just before the touch call to just after it returned (fault, handler,
    # wake-up).  round_trips holds the same by (thread id, page).
    latency_ns: list[int] = field(default_factory=list)
    round_trips: dict[tuple[int, int], int] = field(default_factory=dict)
    # Faulting touches on a page never resolved, ended by the abort (timeout or stall: the
    # descriptor closed): their time is the timeout's, so they enter no percentile.
    aborted_touches: int = 0
    # The same touch on an unregistered mapping, the kernel's own fault, timed the same way.
    floor_ns: list[int] = field(default_factory=list)
    # How the touchers touched (bulk or page: DemoConfig.touch, page for a writing run) and
    # the wall time from the first toucher's first touch to the last one's last touch:
    # divided by the faults, the per-fault cost as a C toucher and handler measure it.
    touch: str = "page"
    touch_ns: int = 0
    touch_cpu_ns: int = 0  # the process's CPU time over the same span (all its threads)
    reserved_pages: int = 0
    expected_faults: int = 0  # pages that must fault: all of them, or the written ones (wp)
    elapsed_s: float = 0.0
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)  # scenario-specific results

    @property
    def ok(self) -> bool:
        return (self.error is None and not self.mismatched_pages
                and self.verified_bytes == self.pages * self.page_size
                and self.faults == self.expected_faults)


Emit = Callable[[Step | Fault], None]


def percentiles(samples: list[int]) -> dict[str, int]:
    if not samples:
        return {}
    s = sorted(samples)

    def pick(q: float) -> int:
        return s[min(len(s) - 1, int(q * len(s)))]
    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": s[-1],
            "min": s[0], "n": len(s)}


def log2_histogram(samples: list[int]) -> list[tuple[int, int]]:
    """(upper bound in microseconds, count) buckets: <=1, <=2, <=4, ... us."""
    buckets: dict[int, int] = {}
    for ns in samples:
        us = max(1, -(-ns // 1000))
        bound = 1 << (us - 1).bit_length()
        buckets[bound] = buckets.get(bound, 0) + 1
    if not buckets:
        return []
    lo, hi = min(buckets), max(buckets)
    out, b = [], lo
    while b <= hi:
        out.append((b, buckets.get(b, 0)))
        b <<= 1
    return out


# ----- what a scenario works on ---------------------------------------------------------------

class Run:
    """The state a scenario works on: the registered area, its alias, the uffd, patterns."""

    def __init__(self, cfg: DemoConfig, area: memtypes.Area, u: uffd.Userfaultfd,
                 stack: ExitStack, write: bool) -> None:
        self.cfg = cfg
        self.area = area
        self.uffd = u
        self.stack = stack  # for what a scenario allocates: released with everything else
        self.write = write  # touches write (--write, or the scenario always writes)
        self.page_size = area.page_size
        self.expected: list[bytes] = [b""] * area.pages
        self.targets = list(range(area.pages))  # the pages the touchers touch (a property)
        self.faulted: set[tuple[int, int]] = set()  # (thread id, page) of each fault message
        # Pages the handler resolved (for WP_ASYNC, the scenario's collect: the kernel did).
        self.resolved: set[int] = set()
        self.source = 0  # a scratch page the handler fills and copies from (missing)
        # What pagemap showed of the mappings (scenarios.py reads it before the touchers
        # start and after they are done): the summary carries them.
        self.readings: list[pagetables.Reading] = []

    def pattern(self, index: int, salt: int = 0) -> bytes:
        """Page contents no other page has: the page index and salt in every 8-byte word."""
        word = ((salt << 32) | (index + 1)).to_bytes(8, "little")
        return word * (self.page_size // 8)

    def after_touch(self, index: int) -> bytes:
        """What page ``index`` must hold once the touchers are done (constant time: it is
        asked for every page)."""
        expected = self.expected[index]
        if self.write and index in self._target_set:
            return TOUCH_BYTE + expected[1:]
        return expected

    @property
    def targets(self) -> list[int]:
        """The pages the touchers touch: all of them, or a scenario's choice.  Replaced, never
        changed in place: the set of them (target_set) is built once, when it is assigned."""
        return self._targets

    @targets.setter
    def targets(self, pages: list[int]) -> None:
        self._targets = pages
        self._target_set = frozenset(pages)

    @property
    def target_set(self) -> frozenset[int]:
        return self._target_set


TOUCH_BYTE = b"\xee"  # what a writing toucher stores at the start of each page it touches


@dataclass(frozen=True)
class Resolver:
    """How a scenario resolves the faults of one run: ``page(index)`` resolves that page with
    ``ioctl`` (its name); ``modified``: the handler changed what the faulting thread will see
    (--modify), the same for every page of a run."""

    page: Callable[[int], object]
    ioctl: str
    modified: bool = False


@dataclass(frozen=True)
class Scenario:
    """One demo as data and a few functions (scenarios.py holds the table of them): what it
    needs of the kernel (demoneeds.DEMOS) and what it does."""

    spec: DemoNeeds
    prepare: Callable[[Run, Emit], None]  # contents before the first touch
    # (run, wake) -> how each page is resolved, made once a run (a fault's handling is on its
    # thread's round trip: nothing is looked up there that could be looked up before).  wake
    # False: resolves with the ioctl's DONTWAKE mode, the engine reads its clock, then wakes
    # the thread (uffd.py says why); True (bulk touch): the resolving ioctl wakes it, as a C
    # handler's does (_handle says why).
    resolver: Callable[[Run, bool], Resolver]
    needs_alias: bool = False
    story: str = ""
    # Makes the floor's unregistered area look like the registered one did before the touch.
    floor_prepare: Callable[[Run, memtypes.MemoryType, memtypes.Area], None] | None = None
    writes: bool = False  # the touch is always a write (wp)
    check: Callable[[DemoConfig], None] | None = None  # usage errors found before anything
    arm: Callable[[Run, Emit], None] | None = None  # after UFFDIO_REGISTER, before touching
    choose: Callable[[Run], list[int]] | None = None  # the pages to touch (default: all)
    collect: Callable[[Run, Summary, Emit], None] | None = None  # after the touchers are done

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def register_mode(self) -> str:
        return self.spec.register_mode

    @property
    def backings(self) -> tuple[str, ...]:
        return self.spec.backings

    @property
    def extra_features(self) -> tuple[str, ...]:
        return self.spec.extra_features

    @property
    def option_features(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return self.spec.option_features

    def needs(self, memory: str, cfg: DemoConfig) -> tuple[str, ...]:
        return self.spec.needs(memory, cfg)

    def absent(self, memory: str, cfg: DemoConfig, offered: int, at: support.Here
               ) -> list[support.Absence]:
        return self.spec.absent(memory, cfg, offered, at)

    def lacking(self, memory: str, cfg: DemoConfig, offered: int,
                at: support.Here | None = None) -> list[str]:
        return self.spec.lacking(memory, cfg, offered, at)

    def works_on(self, cfg: DemoConfig, offered: int, at: support.Here | None = None
                 ) -> list[str]:
        return self.spec.works_on(cfg, offered, at)


# ----- the engine -----------------------------------------------------------------------------

def _cpu_plan(cpus: str) -> tuple[int | None, int | None, str]:
    """(handler CPU, toucher CPU, note); None: leave the scheduler to it."""
    allowed = sorted(os.sched_getaffinity(0))
    if cpus == "any" or not allowed:
        return None, None, "any CPU (scheduler's choice)"
    if cpus == "same":
        return allowed[0], allowed[0], f"handler and touchers on CPU {allowed[0]}"
    if len(allowed) < 2:
        return allowed[0], allowed[0], f"only CPU {allowed[0]} is allowed: spread = same"
    return allowed[0], allowed[1], f"handler on CPU {allowed[0]}, touchers on CPU {allowed[1]}"


class _Touchers:
    """Threads that touch every page once (each starting at a different page), record the
    round trip of each touch, then verify every byte."""

    def __init__(self, run: Run, cfg: DemoConfig, cpu: int | None) -> None:
        self.run, self.cfg, self.cpu = run, cfg, cpu
        self.samples: dict[tuple[int, int], int] = {}  # (tid, page) -> ns (page mode)
        self.bulk = _touch_mode(cfg, run) == "bulk"
        # Each thread's (first touch, last return), by the clock and by the process's CPU
        # time (both threads', whatever runs then: on a busy machine the CPU time is the
        # steadier figure, since other programs' turns on the CPU are not in it).
        self.spans: list[tuple[int, int, int, int]] = []
        self.mismatched: set[int] = set()
        self.verified: set[int] = set()
        self.done = threading.Event()
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._body, args=(k,), daemon=True,
                                         name=f"uffdctl-toucher-{k}")
                        for k in range(cfg.threads)]
        self._left = len(self.threads)
        self._lock = threading.Lock()
        self.started = False

    def start(self) -> None:
        with deferred_sigint():
            self.started = True
            for t in self.threads:
                t.start()

    def _body(self, k: int) -> None:
        main_thread_only()
        try:
            if self.cpu is not None:
                os.sched_setaffinity(0, {self.cpu})
            tid = threading.get_native_id()
            run = self.run
            area, ps, targets = run.area, run.page_size, run.targets
            # Each thread starts at its own place in the list so that they meet on pages.
            start = k * len(targets) // len(self.threads)
            order = targets[start:] + targets[:start]
            began, began_cpu = time.perf_counter_ns(), time.process_time_ns()
            if self.bulk:
                for first, count in _stretches(order):
                    uffd.touch_read_pages(area.addr + first * ps, count, ps)
            else:
                for i in order:
                    if self.stop.is_set():
                        return
                    addr = area.addr + i * ps
                    t0 = time.perf_counter_ns()
                    if run.write:
                        uffd.touch_write(addr, TOUCH_BYTE[0])
                    else:
                        uffd.touch_read(addr)
                    self.samples[(tid, i)] = time.perf_counter_ns() - t0
            self.spans.append((began, time.perf_counter_ns(), began_cpu,
                               time.process_time_ns()))
            # Every page verified once a thread, each from its own place: linear in pages
            # (after_touch is constant time).
            start = k * area.pages // len(self.threads)
            for span in (range(start, area.pages), range(start)):
                for i in span:
                    if self.stop.is_set():
                        return
                    if uffd.compare(area.addr + i * ps, run.after_touch(i)):
                        self.verified.add(i)
                    else:
                        self.mismatched.add(i)
        except BaseException as exc:  # reported by the engine, never lost in a thread
            self.errors.append(exc)
        finally:
            with self._lock:
                self._left -= 1
                if self._left == 0:
                    self.done.set()

    def join(self, timeout: float) -> bool:
        """Wait until every toucher is done with the pages; False on timeout.

        An Event, not Thread.join: a Thread.join that Ctrl-C interrupts can leave the thread
        marked as stopped while it still runs (CPython gh-90882, before 3.13), and the
        clean-up would then unmap pages under it."""
        return not self.threads or self.done.wait(timeout)


def _touch_mode(cfg: DemoConfig, run: Run) -> str:
    """How the touchers touch: bulk only reads (uffd.touch_read_pages: libc has no call that
    writes one byte a page), so a writing run touches page by page."""
    return "bulk" if cfg.touch == "bulk" and not run.write else "page"


def _stretches(pages: list[int]) -> list[tuple[int, int]]:
    """(first page, count) of each run of consecutive pages in ``pages``, in order: what one
    bulk touch call can cover."""
    out: list[tuple[int, int]] = []
    for i in pages:
        if out and out[-1][0] + out[-1][1] == i:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((i, 1))
    return out


def _floor(run: Run, scenario: Scenario, mt: memtypes.MemoryType, cpu: int | None,
           stack: ExitStack) -> list[int]:
    """The same touch on an unregistered mapping prepared the same way: the kernel's own
    fault, i.e. what userfaultfd adds on top of.  No samples when the huge pages it needs
    were taken meanwhile by a program that does not coordinate with uffdctl: the comparison
    is left out (the summary says so), the verified run is not failed for it."""
    try:
        area = mt.allocate(run.area.pages, run.page_size)
    except uffd.UffdError as exc:
        if exc.errno == errno.ENOMEM and mt.kind == "hugetlb":
            return []
        raise
    stack.callback(_release, mt, area, run.page_size, run.area.pages)
    if mt.kind == "hugetlb":
        hugepages.mapped(run.page_size, run.area.pages)
    source = area.addr
    if scenario.floor_prepare is not None:
        scenario.floor_prepare(run, mt, area)
    samples: list[int] = []

    def body() -> None:
        main_thread_only()
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        for i in run.targets:
            addr = source + i * run.page_size
            t0 = time.perf_counter_ns()
            if run.write:
                uffd.touch_write(addr, TOUCH_BYTE[0])
            else:
                uffd.touch_read(addr)
            samples.append(time.perf_counter_ns() - t0)
    finished = threading.Event()

    def run_body() -> None:
        try:
            body()
        finally:
            finished.set()
    t = threading.Thread(target=run_body, daemon=True)
    with deferred_sigint():
        t.start()
        # Runs before the area is released: a Ctrl-C in the wait below must not unmap the
        # pages under the thread still touching them (an Event, not Thread.join: see
        # _Touchers.join).
        stack.callback(finished.wait)
    finished.wait()
    return samples


def run_demo(scenario: Scenario, cfg: DemoConfig, emit: Emit,
             open_uffd: Callable[[], tuple[uffd.Userfaultfd, str]] | None = None,
             at: support.Here | None = None) -> Summary:
    """Run one demo (scenarios.run picks the scenario by cfg.mode).  Raises
    errors.UffdctlError when the environment cannot run it; every resource it took is given
    back before it returns or raises (KeyboardInterrupt too).  ``at``: the kernel whose
    architecture and configuration explain a missing feature (support.here() by default)."""
    if scenario.check is not None:
        scenario.check(cfg)
    mt = memtypes.MEMORY_BY_NAME[cfg.backing]
    page_size = mt.page_size(cfg.huge_page_size)
    handler_cpu, toucher_cpu, cpu_note = _cpu_plan(cfg.cpus)
    old_affinity = os.sched_getaffinity(0)
    started = time.monotonic()
    if open_uffd is None:
        from .access import open_uffd as _open

        def open_uffd() -> tuple[uffd.Userfaultfd, str]:
            # The touchers fault from user mode: a user-mode-only descriptor serves them.
            return _open(nonblock=True, kernel_faults=False)
    with GuardedExitStack() as stack:
        # What the kernel can do is asked before anything system-wide (the huge page pool)
        # is changed: a kernel that cannot do the mode is refused with nothing to give back.
        here = at or support.here()
        u, method, requested, others = _open_and_handshake(scenario, mt, cfg, open_uffd, stack,
                                                           emit, here)
        reserved = _hugepages(cfg, page_size, others, stack, emit) if mt.kind == "hugetlb" \
            else 0
        summary = Summary(cfg.mode, cfg.backing, cfg.pages, page_size, cfg.threads, cfg.cpus,
                          cpu_note, method, reserved_pages=reserved)
        emit(Step(f"UFFDIO_API: requested {' '.join(abi.feature_names(requested))}", "api",
                  {"features": abi.feature_names(requested), "features_mask": requested}))
        run = _map_and_register(scenario, mt, cfg, u, page_size, others, stack, emit, here)
        summary.expected_faults = len(run.targets)
        every = "every page" if len(run.targets) == run.area.pages else \
            f"{len(run.targets)} pages"
        touch = _touch_mode(cfg, run)
        how = "in one call a thread" if touch == "bulk" else "page by page"
        emit(Step(f"{cfg.threads} thread{'s' if cfg.threads > 1 else ''} "
                  f"{'write' if run.write else 'read'} {every} {how}; {cpu_note}", "touching",
                  {"threads": cfg.threads, "write": run.write, "pages": len(run.targets),
                   "cpus": cfg.cpus, "cpu_note": cpu_note, "touch": touch}))
        touchers = _touch_and_handle(run, scenario, summary, emit, handler_cpu, toucher_cpu,
                                     old_affinity)
        _account(run, touchers, summary)
        # Added to the summary (its other fields keep their meaning): how the pages were
        # touched and the per-fault cost, all the touching's wall time over the faults, as
        # the C baseline (benchmarks/c/minor_handler.c) measures it.
        summary.extra["touch"] = summary.touch
        summary.extra["per_fault_ns"] = (summary.touch_ns // summary.faults
                                         if summary.touch_ns and summary.faults else None)
        summary.extra["cpu_per_fault_ns"] = (summary.touch_cpu_ns // summary.faults
                                             if summary.touch_ns and summary.faults else None)
        if run.readings:
            summary.extra["pagetables"] = [r.fields() for r in run.readings]
        if summary.error is None:
            emit(Step(f"verified {summary.verified_bytes} bytes in {run.area.pages} pages"
                      + (f"; {len(summary.mismatched_pages)} pages differ"
                         if summary.mismatched_pages else ""), "verified",
                      {"bytes": summary.verified_bytes, "pages": run.area.pages,
                       "mismatched_pages": summary.mismatched_pages}))
            summary.floor_ns = _floor(run, scenario, mt, toucher_cpu, stack)
            emit(Step("the same touch on an unregistered mapping (the kernel's own fault) "
                      "measured for comparison" if summary.floor_ns else
                      "no huge pages left for the comparison with the kernel's own fault "
                      "(another program took them): left out", "floor",
                      {"measured": bool(summary.floor_ns)}))
    summary.elapsed_s = time.monotonic() - started
    return summary


def _open_and_handshake(scenario: Scenario, mt: memtypes.MemoryType, cfg: DemoConfig,
                        open_uffd: Callable[[], tuple[uffd.Userfaultfd, str]],
                        stack: ExitStack, emit: Emit, at: support.Here
                        ) -> tuple[uffd.Userfaultfd, str, int, list[str]]:
    """Open the descriptor, refuse a kernel that lacks what the run needs, do UFFDIO_API.
    Also returns the demo's other backings that would work on this kernel, for the fixes.

    Every feature the run needs on this memory, with every option (scenario.needs), is
    checked against the kernel's offer before anything is mapped or registered: a missing
    one is a refusal (exit 3) naming what is missing (the release, the architecture's support
    or a Kconfig symbol: support.absence), never the EINVAL of a registration the kernel
    cannot do (arm64 6.1 has no PAGEFAULT_FLAG_WP: userfaultfd_register() refuses MODE_WP)."""
    u, method = open_uffd()
    stack.callback(u.close)  # closing also releases any thread still waiting in a fault
    emit(Step(f"opened a userfaultfd via {method}", "opened", {"method": method}))
    offered = _offered(open_uffd)
    others = [name for name in scenario.works_on(cfg, offered, at)
              if memtypes.MEMORY_BY_NAME[name].kind != mt.kind]
    missing = scenario.absent(mt.kind, cfg, offered, at)
    if missing:
        raise errors.UffdctlError(*advice.missing_features(scenario.name, mt.kind, missing,
                                                           others), errors.UNAVAILABLE)
    wanted = abi.features_mask(scenario.needs(mt.kind, cfg) + scenario.extra_features) & offered
    u.api(wanted)
    return u, method, wanted, others


def _map_and_register(scenario: Scenario, mt: memtypes.MemoryType, cfg: DemoConfig,
                      u: uffd.Userfaultfd, page_size: int, others: list[str], stack: ExitStack,
                      emit: Emit, at: support.Here) -> Run:
    """Map the area (and its alias), fill it as the scenario says, register and arm it."""
    area = _allocate(mt, cfg, page_size, others, stack)
    if scenario.needs_alias:
        mt.map_alias(area)
    emit(Step(_describe_area(mt, area, scenario.needs_alias), "mapped",
              {"memory": mt.name, "kind": mt.kind, "pages": area.pages,
               "page_size": area.page_size, "length": area.length, "address": area.addr,
               "alias_address": area.alias if scenario.needs_alias else None}))
    run = Run(cfg, area, u, stack, write=cfg.write or scenario.writes)
    if scenario.choose is not None:
        run.targets = scenario.choose(run)
    scenario.prepare(run, emit)
    ioctls = u.register(area.addr, area.length, abi.mode_value(scenario.register_mode))
    emit(Step(f"UFFDIO_REGISTER {scenario.register_mode.upper()} on the "
              f"{'second ' if scenario.needs_alias else ''}mapping: kernel offers "
              f"{' '.join(abi.ioctl_names(ioctls))}", "registered",
              {"mode": scenario.register_mode, "address": area.addr, "length": area.length,
               "ioctls": abi.ioctl_names(ioctls), "ioctls_mask": ioctls}))
    _ioctl_differences(u, mt, scenario.register_mode, ioctls, emit, at)
    if scenario.arm is not None:
        scenario.arm(run, emit)
    return run


def _ioctl_differences(u: uffd.Userfaultfd, mt: memtypes.MemoryType, mode: str, ioctls: int,
                       emit: Emit, at: support.Here) -> None:
    """One step per ioctl this range lacks, or is offered and the kernel refuses here, with
    the reason (abi.IOCTL_DIFFERENCES).  What other ranges get is read from the kernel: the
    last field of the descriptor's fdinfo API line is UFFD_API_IOCTLS | UFFD_API_RANGE_IOCTLS
    of this build (fs/userfaultfd.c userfaultfd_show_fdinfo()); unreadable, nothing is said."""
    from . import fdinfo, ioctl_reasons

    try:
        with open(f"/proc/self/fdinfo/{u.fd}") as f:
            built = fdinfo.parse_fdinfo(f.read()).api_ioctls
    except OSError:
        built = None
    if built is None:
        return
    # u.features is what UFFDIO_API offered (the kernel writes back every feature it has).
    for note in ioctl_notes(mt.kind, mode, ioctls, built, u.features, at):
        emit(Step(ioctl_reasons.line(note), "ioctl_difference",
                  {"ioctl": note.ioctl, "status": note.status, "reason": note.reason,
                   "errno": note.errno, "since": note.first or None,
                   "source": note.source or None}))


def ioctl_notes(kind: str, mode: str, ioctls: int, built: int, offered: int,
                at: support.Here) -> list[ioctl_reasons.IoctlNote]:
    """What the demo narrates of a range of ``kind`` registered in ``mode`` that was handed
    ``ioctls``, on a kernel built with the range ioctls ``built`` that offers ``offered``:
    the notes of ioctl_reasons.explain(), a mode this kind cannot register here given with
    its cause (support.absence: arm64 before 6.10 has no write-protect at all)."""
    from . import ioctl_reasons

    registrable = ioctl_reasons.registrable_modes(kind, offered)
    unregistrable = {row.mode: advice.not_offered(absent) for row in abi.MODE_SUPPORT
                     if row.memory == kind
                     and (absent := support.missing(row.features, offered, at))}
    return ioctl_reasons.explain(kind, mode, ioctl_reasons.ioctl_set(ioctls),
                                 ioctl_reasons.ioctl_set(built), registrable,
                                 unregistrable=unregistrable)


def _touch_and_handle(run: Run, scenario: Scenario, summary: Summary, emit: Emit,
                      handler_cpu: int | None, toucher_cpu: int | None,
                      old_affinity: set[int]) -> _Touchers:
    """Start the touchers, resolve every fault until they are done, collect the results."""
    cfg, u, area = run.cfg, run.uffd, run.area
    touchers = _Touchers(run, cfg, toucher_cpu)
    # Runs before the area is unmapped: a toucher woken by the unregister must be gone
    # before its pages are, or it would touch unmapped memory.
    run.stack.callback(_release_touchers, touchers, u, area, cfg.timeout)
    if handler_cpu is not None:
        os.sched_setaffinity(0, {handler_cpu})
        run.stack.callback(os.sched_setaffinity, 0, old_affinity)
    # No cyclic garbage collection while faults are handled: each Fault event is an object
    # the collector tracks, and its passes over all the events a caller keeps (a list, as
    # `--json` consumers and the benchmark do) ran on the fault path, longer the more were
    # kept (4,096 pages: ~20% of the per-fault cost).  Nothing made there is a cycle:
    # reference counting frees it all.
    collecting = gc.isenabled()
    gc.disable()
    try:
        touchers.start()
        _handle(run, scenario, touchers, summary, emit,
                same_cpu=handler_cpu is not None and handler_cpu == toucher_cpu)
    finally:
        if collecting:
            gc.enable()
    touchers.join(cfg.timeout)
    if touchers.errors:
        raise touchers.errors[0]
    if scenario.collect is not None and summary.error is None:
        scenario.collect(run, summary, emit)
    return touchers


def _account(run: Run, touchers: _Touchers, summary: Summary) -> None:
    # Latency: the toucher's round trip for the touches that really faulted and were
    # resolved.  One whose page was never resolved was ended by the abort: apart.
    faulted, resolved = run.faulted, run.resolved
    for (tid, i), ns in touchers.samples.items():
        if (tid, i) in faulted or (0, i) in faulted:
            if i in resolved:
                summary.round_trips[(tid, i)] = ns
            else:
                summary.aborted_touches += 1
    summary.latency_ns = list(summary.round_trips.values())
    if touchers.bulk:
        # No touch was timed alone; a thread's touch that faulted on a page never resolved
        # was ended by the abort all the same.
        summary.aborted_touches = sum(1 for _, i in faulted if i not in resolved)
    summary.touch = "bulk" if touchers.bulk else "page"
    spans = touchers.spans
    if spans and len(spans) == len(touchers.threads):
        summary.touch_ns = max(s[1] for s in spans) - min(s[0] for s in spans)
        summary.touch_cpu_ns = max(s[3] for s in spans) - min(s[2] for s in spans)
    summary.verified_bytes = len(touchers.verified - touchers.mismatched) * run.page_size
    summary.mismatched_pages = sorted(touchers.mismatched)


def _offered(open_uffd: Callable[[], tuple[uffd.Userfaultfd, str]]) -> int:
    # UFFDIO_API is once per fd: ask on a throw-away one.
    probe_fd, _ = open_uffd()
    try:
        return probe_fd.api(0)[0]
    finally:
        probe_fd.close()


def _release_touchers(touchers: _Touchers, u: uffd.Userfaultfd, area: memtypes.Area,
                      timeout: float) -> None:
    touchers.stop.set()
    if u.fd >= 0 and area.addr:
        try:
            # New faults on the range become ordinary faults once it is unregistered, but
            # threads already waiting are not reliably woken by the unregister itself: on
            # 6.18 hugetlb MINOR waiters stayed blocked (userfaultfd_unregister() has long
            # woken only MISSING ranges).  The wake after it releases them all.
            u.unregister(area.addr, area.length)
            u.wake(area.addr, area.length)
        except uffd.UffdError:
            u.close()  # closing wakes every waiter on the fd
    if touchers.started and not touchers.join(timeout):
        # Unmapping under a thread still in a fault would crash the process: close the fd
        # (wakes every waiter, whatever the registration) and wait again.
        u.close()
        touchers.join(timeout)


def _describe_area(mt: memtypes.MemoryType, area: memtypes.Area, alias: bool) -> str:
    size = f"{area.page_size // 1024} kB" if area.page_size < MiB else \
        f"{area.page_size // MiB} MiB"
    text = f"{mt.description}: {area.pages} pages of {size}"
    return text + ", mapped twice (plain mapping + registered mapping)" if alias else text


def _hugepages(cfg: DemoConfig, page_size: int, others: list[str], stack: ExitStack,
               emit: Emit) -> int:
    """Get the run's huge pages before anything is mapped: give back what killed runs left,
    then, under the lock, count what other live uffdctl runs claimed and claim (as root:
    reserve) what this run needs, or fail here with exit 3.  ``others``: the demo's other
    backings that work on this kernel, the only ones a fix may name."""
    need = 2 * cfg.pages  # the registered area and the floor's unregistered one
    kb = page_size // 1024
    for left in hugepages.recover():
        text, fix = advice.leftover(left)
        emit(Step(text + (f"; give them back: {fix}" if fix else ""), "hugepages_recovered",
                  {"pid": left.pid, "size_kb": left.size_kb, "pages": left.pages,
                   "given_back": left.given_back, "left": left.left, "fix": fix}))
    if hugepages.read_pools().pool(page_size) is None:
        raise errors.UffdctlError(f"this kernel has no {kb} kB huge page pool",
                                  advice.or_use("pick a size listed by `uffdctl probe`", others),
                                  errors.UNAVAILABLE)
    grow = cfg.reserve and os.geteuid() == 0
    try:
        res = stack.enter_context(hugepages.reserve(need, page_size, claim=True, grow=grow))
    except hugepages.Shortfall as exc:
        raise errors.UffdctlError(*advice.hugepages_short(exc, not cfg.reserve, others),
                                  errors.UNAVAILABLE) from None
    except hugepages.ReserveError as exc:
        raise errors.UffdctlError(f"cannot reserve huge pages: {exc.reason}",
                                  exc.fix or advice.or_use("free memory", others),
                                  errors.UNAVAILABLE) from None
    if not res.added:
        emit(Step(f"{res.available} free {kb} kB huge pages available, {need} needed",
                  "hugepages_available",
                  {"size_kb": kb, "available": res.available, "needed": need}))
        return 0
    emit(Step(f"reserved {res.added} {kb} kB huge pages (nr_hugepages {res.before} -> "
              f"{res.before + res.added}); they are given back when the demo ends",
              "hugepages_reserved", {"size_kb": kb, "added": res.added,
                                     "nr_before": res.before,
                                     "nr_after": res.before + res.added}))
    return res.added


def _allocate(mt: memtypes.MemoryType, cfg: DemoConfig, page_size: int, others: list[str],
              stack: ExitStack) -> memtypes.Area:
    try:
        area = mt.allocate(cfg.pages, page_size)
    except uffd.UffdError as exc:
        if exc.errno == errno.ENOMEM and mt.kind == "hugetlb":
            # Counted as free, then taken by a process that does not claim them (not a
            # uffdctl run as root: those claim theirs).
            raise errors.UffdctlError("no free huge pages for the mapping (ENOMEM): another "
                                      "process took them after they were counted",
                                      advice.or_use(advice.reserve_hugepages(page_size),
                                                    others, "; or "),
                                      errors.UNAVAILABLE) from None
        raise
    stack.callback(_release, mt, area, page_size, cfg.pages)
    if mt.kind == "hugetlb":
        hugepages.mapped(page_size, cfg.pages)  # off this run's claim: the kernel holds them
    return area


def _release(mt: memtypes.MemoryType, area: memtypes.Area, page_size: int, pages: int
             ) -> None:
    mt.release(area)
    if mt.kind == "hugetlb":  # free again: other runs stop counting them as this run's
        hugepages.unmapped(page_size, pages)


FLUSH_NS = 50_000_000  # events wait at most this long while faults keep coming (20 updates/s)


def _handle(run: Run, scenario: Scenario, touchers: _Touchers, summary: Summary,
            emit: Emit, same_cpu: bool = False) -> None:
    """The fault loop: read every queued message, resolve it, until the touchers are done.

    Resolving comes first; counting and showing the faults wait until no fault is queued (or
    FLUSH_NS has passed).  A touching thread faults again as soon as it is woken, so whatever
    the handler does between two faults is on the round trip of the next one.  same_cpu:
    handler and touchers share one CPU, so a thread woken runs (and faults again) before the
    wake returns: the loop reads at once instead of polling first.

    How the thread is woken depends on how it touches.  Page by page (--touch page), the
    toucher needs the interpreter lock between two touches: the page is resolved with
    DONTWAKE, the handler's clock is read, then UFFDIO_WAKE hands the lock over (uffd.py).
    In bulk (--touch bulk) the toucher stays in one libc call and never asks for the lock, so
    the resolving ioctl wakes it itself, as a C handler's does: one ioctl a fault instead of
    two, about a quarter of the per-fault cost on the 2-core VM.  handle_ns still ends at
    that ioctl's return, which on one CPU may then come after the woken thread has run on to
    its next fault (there is no per-touch round trip in bulk to keep it within)."""
    u, ps, base = run.uffd, run.page_size, run.area.addr
    poller = select.poll()
    poller.register(u.fd, select.POLLIN)
    resolved = run.resolved
    faulted = run.faulted
    stall, timeout_ns = run.cfg.stall, int(run.cfg.timeout * 1e9)
    wake_in_resolve = touchers.bulk
    resolver = scenario.resolver(run, wake_in_resolve)
    resolve = resolver.page
    pagefault, unpack = abi.UFFD_EVENT_PAGEFAULT, uffd.MSG_RECORD.unpack_from
    size = abi.UFFD_MSG_SIZE
    buf = bytearray(size * 64)
    clock = time.perf_counter_ns
    # How each fault went, as (ioctl, modified, duplicate): one of three tuples made here,
    # so that the round trip builds none.
    handled = (resolver.ioctl, resolver.modified, False)
    woken = ("wake", False, False)  # mapped meanwhile (EEXIST): waking was enough
    duplicate = ("wake", False, True)  # another thread's message for a page already resolved
    # (event, flags, address, thread id), page, how, handle_ns: the Fault events are made
    # from these when the faults are shown, off the round trip (and run.faulted filled).
    unshown: list[tuple[tuple[int, int, int, int], int, tuple[str, bool, bool], int]] = []
    last_progress = last_flush = clock()

    # What a fault's flags say, worked out once per distinct flags value (a run sees one or
    # two): naming them took ~4 us a fault, paid on the touching thread's time on one CPU.
    described: dict[int, tuple[list[str], str, bool]] = {}

    def flush() -> None:
        kinds = summary.kinds
        for (_, flags, address, ptid), index, (how, modified, again), handle_ns in unshown:
            faulted.add((ptid, index))
            said = described.get(flags)
            if said is None:
                said = described[flags] = (abi.pagefault_flag_names(flags),
                                           abi.fault_kind(flags),
                                           bool(flags & abi.UFFD_PAGEFAULT_FLAG_WRITE))
            names, kind, is_write = said
            summary.messages += 1
            if not again:
                summary.faults += 1
                kinds[kind] = kinds.get(kind, 0) + 1
                if is_write:
                    summary.writes += 1
            emit(Fault(index, address, flags, names[:], kind, ptid, how, modified, handle_ns,
                       summary.faults, again))
        unshown.clear()

    # On one CPU a woken thread's next fault is queued by the time the wake returns: reading
    # at once saves a poll() on every round trip, which pays for the wake being an ioctl of
    # its own.  On two CPUs it mostly is not queued yet: a read that finds nothing made 2.5
    # context switches a fault instead of 2.1 there, and the round trip 10-20% longer.
    # Whether the touchers are done is asked only when nothing is queued: a thread that
    # faulted is not done.
    woke = False
    while True:
        if not (woke and same_cpu) and not poller.poll(0 if unshown else 50):
            if unshown:
                flush()
                last_flush = clock()
                continue
            if touchers.done.is_set():
                break
            if clock() - last_progress > timeout_ns:
                waiting = len(run.targets) - len(resolved)
                summary.error = (f"no progress for {run.cfg.timeout:g} s with {waiting} pages "
                                 "unresolved: aborted; closing the userfaultfd released the "
                                 "waiting threads")
                emit(Step(summary.error, "aborted",
                          {"timeout_s": run.cfg.timeout, "unresolved": waiting}))
                touchers.stop.set()
                u.close()  # wakes every thread blocked in the fault; they retry without uffd
                return
            continue
        got = woke = False
        for off in range(0, u.read_into(buf), size):
            t0 = clock()
            raw = unpack(buf, off)
            if raw[0] != pagefault:
                continue
            got = True
            index = (raw[2] - base) // ps
            if stall:
                faulted.add((raw[3], index))
                summary.messages += 1
                continue
            asleep = False  # the faulting thread still waits: resolved with DONTWAKE
            if index in resolved:
                # Another thread faulted on the page before it was mapped: wake it.
                u.wake(base + index * ps, ps)
                how = duplicate
            else:
                try:
                    resolve(index)
                    how = handled
                    asleep = not wake_in_resolve
                except uffd.UffdError as exc:
                    if exc.errno != errno.EEXIST:  # mapped meanwhile: waking is enough
                        raise
                    u.wake(base + index * ps, ps)
                    how = woken
                resolved.add(index)
            # handle_ns stops here, at the resolving ioctl's return: the interpreter lock was
            # held through it (uffd._held_ioctl), so no woken Python thread ran in between.
            handle_ns = clock() - t0
            if asleep:
                # Then the wake, with the lock released so the woken thread runs at once.
                u.wake(base + index * ps, ps, hand_over=True)
                woke = True
            elif wake_in_resolve:
                woke = True
            unshown.append((raw, index, how, handle_ns))
        if not got:
            continue
        # No sched_yield() here: the woken thread got the interpreter lock during the
        # hand-over wake, and a yield only adds a syscall to every round trip (measured).
        last_progress = t0
        if t0 - last_flush > FLUSH_NS:
            flush()
            last_flush = t0
    flush()
