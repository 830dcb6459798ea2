"""`uffdctl demo missing` and `uffdctl demo wp` on the real kernel: the same engine as
`demo minor`, so the same guarantees (every byte verified, exact fault sets, nothing leaked)."""

from __future__ import annotations

import os

import pytest
from demo_util import (
    WP_HUGETLB,
    Interrupt,
    assert_nobody_user_mode_only,
    faults,
    fds,
    maps,
    sigint_at_random_moments,
    summary,
)

from uffdctl import demo, scenarios

BASE = os.sysconf("SC_PAGE_SIZE")
HUGE = 2 << 20
KERNEL = pytest.mark.kernel
WP_SHMEM = pytest.mark.uffd("wp:shmem")
WP_ASYNC = pytest.mark.uffd("wp_async")


# ----- missing -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("backing", "zero"), [
    pytest.param("anon", False, marks=KERNEL), ("anon", True), ("shmem", False),
    pytest.param("shmem", True, marks=KERNEL),
])
def test_missing_fills_every_page(run_cli, backing: str, zero: bool) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--backing", backing, "--pages", "12", "--json",
                  *(["--zero"] if zero else []))
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert (s["ok"], s["faults"], s["missing"], s["minor"], s["wp"]) == (True, 12, 12, 0, 0)
    assert s["verified_bytes"] == 12 * BASE and s["floor_ns"]["p50"] > 0
    seen = faults(res.stdout)
    assert sorted(f["page"] for f in seen) == list(range(12))
    # A missing fault carries neither WP nor MINOR; a read carries no WRITE either.
    assert all(f["flags"] == [] and f["kind"] == "missing" for f in seen)
    assert {f["resolved_with"] for f in seen} == {"zeropage" if zero else "copy"}


@KERNEL
@pytest.mark.uffd("missing_hugetlbfs")
def test_missing_on_hugetlb(run_cli, hugepages) -> None:  # type: ignore[no-untyped-def]
    with hugepages(6):
        res = run_cli("demo", "missing", "--backing", "hugetlb", "--pages", "3", "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert (s["ok"], s["faults"], s["missing"], s["verified_bytes"]) == (True, 3, 3, 3 * HUGE)


def test_missing_zero_on_hugetlb_is_refused_up_front(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--backing", "hugetlb", "--zero")
    assert res.returncode == 2 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert "hugetlbfs has no UFFDIO_ZEROPAGE" in line and "drop --zero" in line


def test_missing_write_faults_carry_write(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--write", "--threads", "4", "--pages", "32",
                  "--cpus", "spread", "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert s["ok"] and s["faults"] == 32 and s["writes"] == 32
    firsts = [f for f in faults(res.stdout) if not f["duplicate"]]
    assert sorted(f["page"] for f in firsts) == list(range(32))
    assert all(f["flags"] == ["WRITE"] and f["flags_mask"] == 0x1 for f in firsts)


def test_missing_wrong_copy_is_caught(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--wrong-resolution", "--json")
    assert res.returncode == 1
    s = summary(res.stdout)
    assert s["ok"] is False and s["mismatched_pages"] == list(range(8))


def test_missing_stall_times_out(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--stall", "--timeout", "0.3", "--json", timeout=30)
    assert res.returncode == 1
    assert "released the waiting threads" in summary(res.stdout)["error"]


# ----- wp ----------------------------------------------------------------------------------------

def _check_wp(stdout: str, pages: int, written: int, is_async: bool, page_size: int) -> None:
    s = summary(stdout)
    assert s["ok"], s
    assert len(s["written_pages"]) == written == s["expected_faults"] == s["faults"] == s["wp"]
    assert s["verified_bytes"] == pages * page_size
    if is_async:
        assert s["messages"] == 0 and faults(stdout) == []
        assert s["found_pages"] == {"pagemap_scan": s["written_pages"],
                                    "pagemap_bit57": s["written_pages"]}
    else:
        assert s["found_pages"] == {"faults": s["written_pages"]}
        firsts = [f for f in faults(stdout) if not f["duplicate"]]
        assert sorted(f["page"] for f in firsts) == s["written_pages"]
        assert all(f["flags"] == ["WRITE", "WP"] and f["flags_mask"] == 0x3
                   and f["resolved_with"] == "writeprotect" for f in firsts)


@pytest.mark.parametrize(("backing", "is_async"), [
    pytest.param("anon", False, marks=[KERNEL, pytest.mark.uffd("wp:anon")]),
    pytest.param("anon", True, marks=[KERNEL, pytest.mark.uffd("wp:anon"), WP_ASYNC]),
    pytest.param("shmem", False, marks=[KERNEL, WP_SHMEM]),
    pytest.param("shmem", True, marks=[KERNEL, WP_SHMEM, WP_ASYNC]),
])
def test_wp_finds_exactly_the_written_pages(run_cli, backing: str, is_async: bool) -> None:  # type: ignore[no-untyped-def]
    args = ["demo", "wp", "--backing", backing, "--pages", "40", "--written", "13",
            "--seed", "7", "--threads", "3", "--json"]
    res = run_cli(*args, *(["--async"] if is_async else []))
    assert res.returncode == 0, res.stderr
    _check_wp(res.stdout, 40, 13, is_async, BASE)


@WP_HUGETLB
@pytest.mark.parametrize("is_async", [pytest.param(False, marks=KERNEL),
                                      pytest.param(True, marks=WP_ASYNC)])
def test_wp_on_hugetlb(run_cli, hugepages, is_async: bool) -> None:  # type: ignore[no-untyped-def]
    with hugepages(8):
        res = run_cli("demo", "wp", "--backing", "hugetlb", "--pages", "4", "--json",
                      *(["--async"] if is_async else []))
    assert res.returncode == 0, res.stderr
    _check_wp(res.stdout, 4, 2, is_async, HUGE)


def test_wp_seed_picks_the_pages(run_cli) -> None:  # type: ignore[no-untyped-def]
    picks = set()
    for seed in ("1", "2", "3"):
        res = run_cli("demo", "wp", "--pages", "16", "--seed", seed, "--json")
        assert res.returncode == 0, res.stderr
        picks.add(tuple(summary(res.stdout)["written_pages"]))
    assert len(picks) > 1


def test_wp_written_zero_is_a_clean_run(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "wp", "--written", "0", "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert s["ok"] and s["faults"] == 0 and s["written_pages"] == []


# ----- unprivileged ------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [pytest.param(["missing"], marks=KERNEL), ["wp"],
                                  pytest.param(["wp", "--async"], marks=WP_ASYNC)])
def test_nobody_runs_the_anon_demos_in_user_mode(as_nobody, sysctl, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    assert_nobody_user_mode_only(as_nobody("demo", *args, "--json"))


@WP_HUGETLB
def test_nobody_hugetlb_without_pages_is_exit_3(as_nobody, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        res = as_nobody("demo", "wp", "--backing", "hugetlb")
    assert res.returncode == 3
    (line,) = res.stderr.strip().splitlines()
    assert "no free huge pages" in line and "not root" in line


# ----- nothing left behind ---------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [
    demo.DemoConfig(mode="missing", backing="anon", pages=4, threads=2),
    demo.DemoConfig(mode="missing", backing="shmem", pages=4, zero=True),
    demo.DemoConfig(mode="wp", backing="anon", pages=6, threads=2),
    pytest.param(demo.DemoConfig(mode="wp", backing="shmem", pages=6, wp_async=True),
                 marks=[WP_SHMEM, WP_ASYNC]),
], ids=["missing-anon", "missing-shmem-zero", "wp-anon", "wp-shmem-async"])
def test_interrupt_at_every_event_releases_everything(cfg: demo.DemoConfig) -> None:
    # A full run first: glibc keeps the stacks of finished threads mapped for reuse, which
    # is not a leak of ours.
    assert scenarios.run(cfg, lambda _e: None).ok
    fds_before, maps_before = fds(), maps()
    n = 1
    while True:
        try:
            scenarios.run(cfg, Interrupt(n))
        except KeyboardInterrupt:
            pass
        else:
            break
        assert fds() == fds_before, f"fd leaked when interrupted at event {n}"
        assert maps() == maps_before, f"mapping leaked when interrupted at event {n}"
        n += 1
    assert n > 5


@pytest.mark.parametrize("mode", [pytest.param("missing", marks=pytest.mark.uffd(
    "missing_hugetlbfs")), pytest.param("wp", marks=WP_HUGETLB)])
def test_sigint_at_random_moments_on_hugetlb(no_free_hugepages, mode: str) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        sigint_at_random_moments([mode, "--backing", "hugetlb", "--pages", "8", "--threads",
                                  "2"], 6, 99)
