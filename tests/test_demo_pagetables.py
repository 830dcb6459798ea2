"""The demos' page-table readings ("pagetables" steps) against /proc/self/pagemap read by the
test itself, at the moment each step is emitted, in the demo's own process: as root (frame
numbers shown) and as nobody (frames hidden), on every memory type each demo supports, on
whatever kernel runs the tests."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from typing import Any

import pytest
from conftest import NOBODY, ROOT
from demo_util import MINOR_HUGETLB, WP_HUGETLB, lines, summary

from uffdctl import abi, demo, pagetables, uffd

KERNEL = pytest.mark.kernel
HUGE_PAGES = 2  # pages of a hugetlb run: the demo needs twice that (its area and the floor's)

# Runs in the demo's process (root: this interpreter; nobody: through setpriv).  Its pagemap
# reader is its own, one pread per page, nothing of uffdctl.pagetables: each "pagetables"
# step is checked against what the kernel says at the moment it is emitted.
CHECKER = r'''
import json, os, struct
from uffdctl import demo, scenarios

BASE = os.sysconf("SC_PAGE_SIZE")


def own(addr, pages, page_size):
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        return [struct.unpack("=Q", os.pread(fd, 8, (addr + i * page_size) // BASE * 8))[0]
                for i in range(pages)]
    finally:
        os.close(fd)


seen = []


def emit(e):
    if getattr(e, "name", None) == "pagetables":
        f = e.fields
        seen.append({"reported": f, "own": own(f["address"], f["pages"], f["page_size"])})


s = scenarios.run(demo.DemoConfig(**json.loads(CONFIG)), emit)
print(json.dumps({"ok": s.ok, "error": s.error, "euid": os.geteuid(),
                  "uffd_method": s.uffd_method, "written": s.extra.get("written_pages"),
                  "summary": s.extra.get("pagetables"), "seen": seen}))
'''

CASES = [
    pytest.param("minor", "hugetlb", False, marks=[KERNEL, MINOR_HUGETLB],
                 id="minor-hugetlb"),
    pytest.param("minor", "shmem", False, marks=[KERNEL, pytest.mark.uffd("minor:shmem")],
                 id="minor-shmem"),
    pytest.param("missing", "anon", False, marks=[KERNEL, pytest.mark.uffd("missing:anon")],
                 id="missing-anon"),
    pytest.param("missing", "shmem", False,
                 marks=[KERNEL, pytest.mark.uffd("missing:shmem")], id="missing-shmem"),
    pytest.param("missing", "hugetlb", False,
                 marks=[KERNEL, pytest.mark.uffd("missing_hugetlbfs")], id="missing-hugetlb"),
    pytest.param("wp", "anon", False, marks=[KERNEL, pytest.mark.uffd("wp:anon")],
                 id="wp-anon"),
    pytest.param("wp", "anon", True,
                 marks=[KERNEL, pytest.mark.uffd("wp:anon", "wp_async")], id="wp-anon-async"),
    # wp on shmem and hugetlbfs needs WP_HUGETLBFS_SHMEM (5.19): skipped, with the probe's
    # reason, where the kernel lacks it.
    pytest.param("wp", "shmem", False, marks=[KERNEL, pytest.mark.uffd("wp:shmem")],
                 id="wp-shmem"),
    pytest.param("wp", "hugetlb", False, marks=[KERNEL, WP_HUGETLB], id="wp-hugetlb"),
]


def _config(mode: str, backing: str, is_async: bool) -> dict[str, Any]:
    pages = HUGE_PAGES if backing == "hugetlb" else 8
    return {"mode": mode, "backing": backing, "pages": pages, "wp_async": is_async,
            "written": 3 if mode == "wp" and pages > 3 else None, "seed": 5}


def _run(cfg: dict[str, Any], prefix: list[str] | None = None, python: str = sys.executable,
         env: dict[str, str] | None = None) -> dict[str, Any]:
    code = f"CONFIG = {json.dumps(json.dumps(cfg))}\n" + CHECKER
    res = subprocess.run((prefix or []) + [python, "-c", code], capture_output=True,
                         text=True, timeout=180, env=env,
                         cwd="/" if prefix else ROOT)
    assert res.returncode == 0, res.stderr
    out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def _frames(entries: list[int]) -> list[int]:
    return [e & abi.PM_PFRAME_MASK if e & abi.PM_PRESENT else 0 for e in entries]


def _bit57_known() -> bool:
    # Whether a clear bit 57 can be believed: the kernel has it from 5.14 (fb8e37f35a2f).
    return abi.release_at_least(platform.release(), abi.PM_UFFD_WP_FIRST)


def _check(out: dict[str, Any], cfg: dict[str, Any], root: bool) -> None:
    """Every reading as the test's own pagemap read shows it, and as the kernel must have
    it for that demo; the summary carries the same readings."""
    assert out["ok"], out["error"]
    assert (out["euid"] == 0) == root
    mode, pages = cfg["mode"], cfg["pages"]
    seen = out["seen"]
    reported = [s["reported"] for s in seen]
    assert out["summary"] == reported
    assert set(reported[0]) == set(demo.STEPS["pagetables"][1])
    where = [(r["phase"], r["mapping"]) for r in reported]
    assert where == {"minor": [("before", "plain"), ("before", "registered"),
                               ("after", "plain"), ("after", "registered")],
                     "missing": [("before", "registered"), ("after", "registered")],
                     "wp": [("before", "registered"), ("after", "registered")]}[mode]
    plain_frames: list[int] = []
    for s in seen:
        r, own = s["reported"], s["own"]
        present = [bool(e & abi.PM_PRESENT) for e in own]
        frames = _frames(own)
        wp = [i for i, e in enumerate(own) if e & abi.PM_UFFD_WP]
        # What the demo reported is what the kernel showed the test.
        assert r["pages"] == pages == len(own)
        assert r["present"] == sum(present), (r, own)
        assert r["swapped"] == sum(1 for e in own if e & abi.PM_SWAP)
        assert r["unexpected"] == [], r
        # Frame numbers: shown to root, zero for nobody (4.2), whatever the page.
        shown = [f for f, p in zip(frames, present, strict=True) if p]
        if shown:
            assert r["pfn_visible"] == any(shown)
            assert all(shown) if root else not any(shown), (root, frames)
        assert r["pfn_visible"] == root
        # Bit 57: counted where the kernel has it, null where it has not (before 5.14).
        if r["uffd_wp"] is None:
            assert not _bit57_known() and not wp, (r, wp)
        else:
            assert r["uffd_wp"] == len(wp)
            assert _bit57_known() or wp
        # And what must hold for the demo, on any kernel.
        expect_present = not (r["phase"] == "before" and r["mapping"] == "registered"
                              and mode in ("minor", "missing"))
        assert sum(present) == (pages if expect_present else 0), (r, own)
        if mode == "wp" and r["uffd_wp"] is not None:
            still = set(range(pages)) if r["phase"] == "before" else \
                set(range(pages)) - set(out["written"])
            assert set(wp) == still, (r["phase"], wp, out["written"])
        if r["mapping"] == "plain":
            plain_frames = frames
        if mode == "minor" and (r["phase"], r["mapping"]) == ("after", "registered"):
            # UFFDIO_CONTINUE mapped the page cache's page: the plain mapping's frame.
            if root:
                assert frames == plain_frames and all(frames)
                assert r["same_frame"] == pages
            else:
                assert r["same_frame"] is None
        else:
            assert r["same_frame"] is None


@pytest.mark.parametrize(("mode", "backing", "is_async"), CASES)
def test_readings_match_pagemap_as_root(hugepages, mode: str, backing: str,  # type: ignore[no-untyped-def]
                                        is_async: bool) -> None:
    cfg = _config(mode, backing, is_async)
    if backing == "hugetlb":
        with hugepages(2 * cfg["pages"]):
            out = _run(cfg)
    else:
        out = _run(cfg)
    _check(out, cfg, root=True)


@pytest.mark.parametrize(("mode", "backing", "is_async"), CASES)
def test_readings_match_pagemap_as_nobody(nobody_python, sysctl, hugepages,  # type: ignore[no-untyped-def]
                                          mode: str, backing: str, is_async: bool) -> None:
    """Without CAP_SYS_ADMIN the kernel zeroes frame numbers: the demo says so and never
    claims the frames equal."""
    # Any descriptor will do here (the reader's capabilities are the point): allowed for
    # every user, also on a kernel before UFFD_USER_MODE_ONLY (5.11).
    sysctl("vm/unprivileged_userfaultfd", "1")
    python, env = nobody_python
    cfg = _config(mode, backing, is_async)
    if backing == "hugetlb":
        # nobody cannot grow the pool: the fixture holds what the run needs.
        with hugepages(2 * cfg["pages"]):
            out = _run(cfg, NOBODY, python, env)
    else:
        out = _run(cfg, NOBODY, python, env)
    _check(out, cfg, root=False)


@KERNEL
@pytest.mark.uffd("minor:shmem")
def test_json_stream_and_summary_carry_the_readings(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--pages", "4", "--json")
    assert res.returncode == 0, res.stderr
    steps = [e for e in lines(res.stdout) if e.get("name") == "pagetables"]
    assert len(steps) == 4
    fields = set(demo.STEPS["pagetables"][1])
    readings = [{k: v for k, v in e.items() if k in fields} for e in steps]
    assert all(set(r) == fields for r in readings)
    assert summary(res.stdout)["pagetables"] == readings
    texts = [e["text"] for e in steps]
    assert "0 of 4 pages present (no page table entries yet)" in texts[1]
    assert "same page frames as the plain mapping: 4 of 4" in texts[3]


@KERNEL
@pytest.mark.uffd("missing:anon")
def test_plain_output_shows_the_readings(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--backing", "anon", "--pages", "3")
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert any(line.startswith("step: pagemap before the first touch: registered mapping 0x")
               and line.endswith("+12 kB: 0 of 3 pages present (no page table entries yet)")
               for line in out), out
    assert "pagemap after, registered mapping: 3 of 3 present" in out


@KERNEL
@pytest.mark.uffd("missing:anon")
def test_a_reading_that_contradicts_the_story_fails_the_run(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """A kernel that showed every page present before the first touch (here: pagemap made to
    say so) makes the narration untrue: the run fails, naming the pages."""
    from uffdctl import scenarios

    real = pagetables.read_entries
    monkeypatch.setattr(pagetables, "read_entries", lambda a, n, ps: [
        e | abi.PM_PRESENT for e in real(a, n, ps)])
    steps: list[demo.Step] = []
    s = scenarios.run(demo.DemoConfig(mode="missing", backing="anon", pages=4),
                      lambda e: steps.append(e) if isinstance(e, demo.Step) else None)
    assert not s.ok and s.error is not None
    assert "pagemap before: registered mapping pages 0, 1, 2, 3 not as the demo says" in s.error
    (before, _after) = [e for e in steps if e.name == "pagetables"]
    assert before.fields["unexpected"] == [0, 1, 2, 3]
    assert before.text.endswith("4 of 4 pages present; not as expected: pages 0, 1, 2, 3")


# ----- the logic, on entries made up here ----------------------------------------------------

P, WP, SWAP = abi.PM_PRESENT, abi.PM_UFFD_WP, abi.PM_SWAP


def _summarize(entries: list[int], expect: pagetables.Expect, release: str = "6.18.0",
               visible: bool | None = None) -> pagetables.Reading:
    return pagetables.summarize("after", "registered", 0x7F0000000000, len(entries), 4096,
                                entries, expect, release, pfn_visible=visible)


def test_same_frames_are_counted_only_when_shown() -> None:
    shown = _summarize([P | 10, P | 11, P | 99], pagetables.Expect(True, frames=(10, 11, 12)))
    assert (shown.pfn_visible, shown.same_frame, shown.unexpected) == (True, 2, [2])
    hidden = _summarize([P, P, P], pagetables.Expect(True, frames=(0, 0, 0)))
    assert (hidden.pfn_visible, hidden.same_frame, hidden.unexpected) == (False, None, [])
    text = pagetables.describe(hidden, "after", pagetables.Expect(True, frames=(0, 0, 0)),
                               "plain")
    assert "page frames hidden (needs CAP_SYS_ADMIN)" in text and "same page" not in text


def test_bit57_is_unknown_before_5_14() -> None:
    expect = pagetables.Expect(True, wp=frozenset({0, 1}))
    old = _summarize([P | 1, P | 2], expect, release="5.10.0-30-amd64")
    assert (old.uffd_wp, old.unexpected) == (None, [])
    assert pagetables.NO_WP_BIT in pagetables.describe(old, "once protected", expect)
    new = _summarize([P | 1, P | 2], expect, release="5.14.0")
    assert (new.uffd_wp, new.unexpected) == (0, [0, 1])
    # A kernel that shows the bit has it, whatever its release says.
    backported = _summarize([P | WP | 1, P | 2], expect, release="5.10.0")
    assert (backported.uffd_wp, backported.unexpected) == (1, [1])


def test_wp_after_text_and_disagreement() -> None:
    expect = pagetables.Expect(True, wp=frozenset({1, 3}))  # 0 and 2 were written
    r = _summarize([P | 1, P | WP | 2, P | 3, P | 4], expect)
    assert r.unexpected == [3]
    text = pagetables.describe(r, "after", expect)
    assert "clear on 2 of the 2 written pages, still set on 1 of the 2 others" in text
    assert "not as expected: page 3" in text
    assert "registered mapping pages 3" in (pagetables.disagreement([r]) or "")
    assert pagetables.disagreement([_summarize([P | 1], pagetables.Expect(True))]) is None


def test_not_present_and_swapped() -> None:
    before = _summarize([0, abi.PM_SOFT_DIRTY], pagetables.Expect(False), visible=True)
    assert (before.present, before.unexpected, before.pfn_visible) == (0, [], True)
    assert "(no page table entries yet)" in pagetables.describe(before, "before",
                                                                pagetables.Expect(False))
    swapped = _summarize([SWAP | 7, P | 1], pagetables.Expect(True))
    assert (swapped.present, swapped.swapped, swapped.unexpected) == (1, 1, [0])


def test_one_read_per_mapping_whatever_the_page_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """A huge page has one entry per base page: the first of each is kept, all of them read
    by a single pread()."""
    size = 4 << 20
    addr = uffd.mmap(size, uffd.PROT_READ | uffd.PROT_WRITE,
                     uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS)
    try:
        uffd.fill(addr, 1, size)
        calls: list[int] = []
        real = os.pread

        def pread(fd: int, n: int, offset: int) -> bytes:
            calls.append(n)
            return real(fd, n, offset)
        monkeypatch.setattr(os, "pread", pread)
        base_pages = size // pagetables.BASE_PAGE
        huge = pagetables.read_entries(addr, 2, 2 << 20)
        base = pagetables.read_entries(addr, base_pages, pagetables.BASE_PAGE)
        assert calls == [base_pages * abi.PAGEMAP_ENTRY_SIZE] * 2
        assert len(huge) == 2 and len(base) == base_pages
        assert all(e & abi.PM_PRESENT for e in base)
        assert huge == [base[0], base[base_pages // 2]]
    finally:
        uffd.munmap(addr, size)


def test_pagetables_steps_are_in_the_schema() -> None:
    assert set(demo.STEPS["pagetables"][1]) == set(pagetables.Reading(
        "before", "plain", 0, 0, 0, 4096, 0, 0, None, None, False, []).fields())
    assert "pagetables_unreadable" in demo.STEPS
