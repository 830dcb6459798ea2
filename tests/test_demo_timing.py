"""The demo's timings measure what their labels say.

- A fault's handler figure (handle_ns: message read to the resolving ioctl's return) lies
  within the faulting thread's own round trip for that touch, also with handler and
  touchers on one CPU, where a woken toucher used to run on before the handler's clock
  stopped.
- A touch ended by the abort (never resolved) is counted apart, never as a round trip.
- The per-fault cost (--touch bulk, the default for reads: every page read in one libc call)
  is the touching's wall time over the faults, with the per-touch figures left empty; with
  --touch page it is given too, beside the per-touch round trips.
- `inspect --watch`'s rate is labelled for what minflt counts: every minor page fault.

No thresholds: speed is measured in benchmarks/, tests assert orderings and relations only.
"""

from __future__ import annotations

import io
import mmap
import os

import pytest
from demo_util import MINOR_HUGETLB, summary

from uffdctl import demo, errors, procs, scenarios
from uffdctl.render.demo import summary_lines
from uffdctl.render.documents import summary_json

MINOR_SHMEM = pytest.mark.uffd("minor:shmem")
RUNS = 5  # the race showed on about one run in ten before the fix, on the last fault


def _handler_within_round_trip(cfg: demo.DemoConfig) -> None:
    """One run (--touch page: each touch timed): every fault event that resolved its page has
    handle_ns <= the round trip its thread measured for that touch, and every round trip
    counted is a resolved touch.

    A duplicate (another thread's message for a page already resolved) is not held to it:
    the wake that followed the first resolution already woke that thread too, so its round
    trip may end before the handler even takes the duplicate message."""
    events: list[demo.Step | demo.Fault] = []
    s = scenarios.run(cfg, events.append)
    assert s.ok, s.error
    assert s.cpu_note.startswith(("handler and touchers on CPU", "only CPU"))
    faults = [e for e in events if isinstance(e, demo.Fault)]
    assert len(faults) == s.messages and s.faults == cfg.pages
    assert s.aborted_touches == 0
    assert sorted(s.latency_ns) == sorted(s.round_trips.values())
    first: dict[int, demo.Fault] = {}
    for f in faults:
        assert f.tid > 0  # THREAD_ID: the fault names its thread, so its touch is known
        round_trip = s.round_trips.get((f.tid, f.page))
        assert round_trip is not None, (f, sorted(s.round_trips))
        if f.duplicate:
            assert f.page in first and f.resolved_with == "wake", f
            continue
        first[f.page] = f
        assert 0 < f.handle_ns <= round_trip, (
            f"fault #{f.seq} page {f.page}: {f.handle_ns} ns in handler > the thread's own "
            f"round trip {round_trip} ns")


@pytest.mark.kernel
@MINOR_SHMEM
@pytest.mark.parametrize("threads", [1, 2])
def test_handler_figure_within_the_round_trip_shmem(threads: int) -> None:
    for _ in range(RUNS):
        _handler_within_round_trip(demo.DemoConfig(
            mode="minor", backing="shmem", pages=16, threads=threads, cpus="same",
            touch="page"))


@pytest.mark.kernel
@MINOR_HUGETLB
def test_handler_figure_within_the_round_trip_hugetlb(hugepages) -> None:  # type: ignore[no-untyped-def]
    pages = 4
    with hugepages(2 * pages):  # the registered area and the floor's
        for threads in (1, 2):
            for _ in range(RUNS):
                _handler_within_round_trip(demo.DemoConfig(
                    mode="minor", backing="hugetlb", pages=pages, threads=threads,
                    cpus="same", reserve=False, touch="page"))


@pytest.mark.kernel
@MINOR_SHMEM
def test_aborted_touches_are_apart_from_the_round_trips() -> None:
    """A stalled run: every faulting touch was ended by closing the descriptor after the
    timeout, none resolved: all counted as aborted, none as a latency sample."""
    s = scenarios.run(demo.DemoConfig(mode="minor", backing="shmem", pages=4, threads=2,
                                      cpus="same", stall=True, timeout=0.5),
                      lambda e: None)
    assert s.error is not None and not s.ok
    assert s.messages >= 1 and s.aborted_touches == s.messages  # one touch per message
    assert s.latency_ns == [] and s.round_trips == {}
    doc = summary_json(s)
    assert doc["aborted_touches"] == s.aborted_touches
    assert doc["latency_ns"] == {} and doc["histogram_us"] == []
    text = "\n".join(summary_lines(s))
    assert f"aborted touches: {s.aborted_touches} " in text and "round trip per fault" not in text


@pytest.mark.kernel
@MINOR_SHMEM
def test_aborted_touches_in_the_json_stream(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--threads", "2", "--stall",
                  "--timeout", "0.5", "--json", timeout=60)
    assert res.returncode == errors.FAILED, res.stderr
    s = summary(res.stdout)
    assert s["aborted_touches"] >= 1 and s["aborted_touches"] == s["messages"]
    assert s["latency_ns"] == {} and s["histogram_us"] == []


@pytest.mark.kernel
@MINOR_SHMEM
def test_a_run_that_went_well_has_no_aborted_touch(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--pages", "8", "--touch", "page",
                  "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert s["aborted_touches"] == 0 and s["latency_ns"]["max"] >= s["latency_ns"]["p50"]
    assert s["touch"] == "page" and s["per_fault_ns"] > 0 and s["cpu_per_fault_ns"] > 0


@pytest.mark.kernel
@MINOR_SHMEM
@pytest.mark.parametrize("threads", [1, 3])
def test_bulk_touch_gives_the_per_fault_cost(threads: int) -> None:
    """The default touch reads every page in one call: every fault counted exactly, every
    byte verified, the per-fault cost given, and no per-touch figure (nothing was timed
    touch by touch)."""
    pages = 64
    events: list[demo.Step | demo.Fault] = []
    s = scenarios.run(demo.DemoConfig(mode="minor", backing="shmem", pages=pages,
                                      threads=threads, cpus="same"), events.append)
    assert s.ok, s.error
    assert s.touch == "bulk" and s.faults == pages and s.kinds == {"minor": pages}
    assert s.messages == len([e for e in events if isinstance(e, demo.Fault)]) >= pages
    assert s.verified_bytes == pages * s.page_size
    assert s.latency_ns == [] and s.aborted_touches == 0
    assert s.touch_ns > 0 and s.extra["per_fault_ns"] == s.touch_ns // pages
    assert all(0 < f.handle_ns <= s.touch_ns for f in events if isinstance(f, demo.Fault))
    doc = summary_json(s)
    assert doc["touch"] == "bulk" and doc["per_fault_ns"] > 0 and doc["latency_ns"] == {}
    assert "per fault ns: " in "\n".join(summary_lines(s))


@pytest.mark.kernel
@MINOR_SHMEM
def test_a_writing_run_touches_page_by_page(run_cli) -> None:  # type: ignore[no-untyped-def]
    """A write cannot be done in one call the way the reads are (uffd.touch_read_pages), so a
    writing run touches page by page, whatever --touch says, and the summary says so."""
    res = run_cli("demo", "minor", "--backing", "shmem", "--pages", "8", "--write",
                  "--touch", "bulk", "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert s["touch"] == "page" and s["writes"] == 8 and s["latency_ns"]["p50"] > 0


def test_watch_rate_is_labelled_page_faults_and_counts_plain_ones() -> None:
    """minflt counts every minor page fault of the process: first touches of plain anonymous
    memory, with no userfaultfd anywhere, raise it; the view calls it page faults."""
    from rich.console import Console

    from uffdctl.render.inspect import process_view

    frames = procs.watch(os.getpid(), 0.01)
    first = next(frames)
    pages = 64
    size = pages * mmap.PAGESIZE
    with mmap.mmap(-1, size) as m:
        for off in range(0, size, mmap.PAGESIZE):
            m[off] = 1  # a first touch: one minor page fault each
        second = next(frames)
    assert second.rate is not None and second.rate > 0
    assert second.report.minflt - first.report.minflt >= pages
    out = io.StringIO()
    con = Console(file=out, width=200, color_system=None)
    con.print(process_view(second.report, con, rate=second.rate))
    text = out.getvalue()
    assert "page faults" in text and "minflt: all minor page faults of the process" in text
    assert "minor faults" not in text
