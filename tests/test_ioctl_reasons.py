"""Why memory types' UFFDIO_REGISTER ioctls differ (abi.IOCTL_DIFFERENCES, ioctl_reasons):
the table against the running kernel, whatever its release.

Each memory type is registered for real in every mode it takes; every range ioctl another
registration got and this one lacks must have a reason, and every errno the table claims (an
ioctl listed and refused, or missing and refused when called anyway) is what the kernel
answers.  Nothing needs a free huge page: ranges are mapped MAP_NORESERVE, and the refusals
tried here come before any page is taken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from uffdctl import abi, access, demo, ioctl_reasons, memtypes, probe, support, uffd
from uffdctl.ioctl_reasons import MISSING, REFUSED, UNEXPLAINED

SINGLE_MODES = ("missing", "wp", "minor")


# ----- the table and the logic, without a kernel ----------------------------------------------

def test_table_rows_are_well_formed() -> None:
    kinds = {mt.kind for mt in memtypes.MEMORY_TYPES}
    seen = set()
    for row in abi.IOCTL_DIFFERENCES:
        key = (row.ioctl, row.memory, row.status)
        assert key not in seen, key  # one reason per (ioctl, memory, status)
        seen.add(key)
        assert abi.IOCTL_BY_KEY[row.ioctl].range_ioctl, row
        assert row.memory in kinds | {""}, row
        assert row.status in (MISSING, REFUSED), row
        assert row.needs_mode in {m.name for m in abi.REGISTER_MODES} | {""}, row
        # A rule of the mode names its mode; a refusal is of an ioctl that was listed.
        assert row.memory or row.needs_mode, row
        assert row.status == MISSING or not row.needs_mode, row
        assert "\n" not in row.reason and row.reason.strip() == row.reason, row
        assert abi.release_tuple(row.first) != (0, 0), row
        assert row.until == "" or abi.release_tuple(row.until) > abi.release_tuple(row.first)
        assert row.errno == "" or row.errno.startswith("E"), row
        # The kernel is cited: a function and, but for the 7.3-rc rule, a commit.
        assert "()" in row.source, row
        assert row.first.endswith("-rc") or any(
            len(w) == 12 and all(c in "0123456789abcdef" for c in w)
            for w in row.source.split()), row


# What 6.18 handed back (seen with tests below): registered missing+wp+minor, or the widest
# mode each kind takes.
_ALL = {"wake", "copy", "zeropage", "move", "writeprotect", "continue", "poison"}
_HUGETLB = {"wake", "copy", "writeprotect", "continue", "poison"}


def test_explain_on_a_618_like_kernel() -> None:
    hugetlb = ioctl_reasons.explain("hugetlb", "missing+wp+minor", _HUGETLB, _ALL,
                                    set(SINGLE_MODES))
    assert [(n.ioctl, n.status, n.errno) for n in hugetlb] == [
        ("zeropage", MISSING, "EINVAL"), ("move", MISSING, "EINVAL")]
    shmem = ioctl_reasons.explain("shmem", "missing", _ALL - {"writeprotect", "continue"}, _ALL,
                                  set(SINGLE_MODES))
    # shmem registers WP and MINOR here: it lacks them by the mode's rule, not its kind's.
    assert [(n.ioctl, n.status) for n in shmem] == [
        ("move", REFUSED), ("writeprotect", MISSING), ("continue", MISSING)]
    assert "registered in WP mode" in shmem[1].reason and "MINOR mode" in shmem[2].reason
    anon = ioctl_reasons.explain("anon", "missing+wp", _ALL - {"continue"}, _ALL,
                                 {"missing", "wp"})
    assert [(n.ioctl, n.status, n.errno) for n in anon] == [("continue", MISSING, "EINVAL")]
    assert "anonymous memory" in anon[0].reason
    # A try that showed MOVE working on shmem wins over the table; one that failed gives its
    # own errno.
    assert not ioctl_reasons.explain("shmem", "wp", {"move"}, {"move"}, {"wp"}, {})
    assert ioctl_reasons.explain("shmem", "wp", {"move"}, {"move"}, {"wp"},
                                 {"move": "EPERM"})[0].errno == "EPERM"


def test_explain_on_a_510_like_kernel() -> None:
    # 5.10: no WP on shmem or hugetlb, so their WRITEPROTECT is missing by kind.
    others = {"wake", "copy", "zeropage", "writeprotect"}
    notes = ioctl_reasons.explain("shmem", "missing", {"wake", "copy", "zeropage"}, others,
                                  {"missing"})
    assert [(n.ioctl, n.status) for n in notes] == [("writeprotect", MISSING)]
    assert "PTE markers" in notes[0].reason
    notes = ioctl_reasons.explain("hugetlb", "missing", {"wake", "copy"}, others, {"missing"})
    assert [n.ioctl for n in notes] == ["zeropage", "writeprotect"]
    assert all(n.status == MISSING for n in notes)


def test_an_ioctl_the_table_cannot_explain_is_said_so() -> None:
    notes = ioctl_reasons.explain("anon", "missing", {"wake"}, {"wake", "copy"}, {"missing"})
    assert [(n.ioctl, n.status) for n in notes] == [("copy", UNEXPLAINED)]
    assert "knows no reason" in ioctl_reasons.line(notes[0])


# ----- against the running kernel -------------------------------------------------------------

def _offered() -> int:
    u, _ = access.open_uffd(kernel_faults=False)
    with u:
        return u.api(0)[0]


@contextmanager
def _registered(mt: memtypes.MemoryType, mode: str, offered: int
                ) -> Iterator[tuple[uffd.Userfaultfd, memtypes.Area, int]]:
    """One page of ``mt`` (MAP_NORESERVE) registered in ``mode``: (uffd, area, ioctls)."""
    area = mt.allocate(1, mt.page_size(), noreserve=True)
    try:
        u, _ = access.open_uffd(kernel_faults=False)
        with u:
            u.api(abi.features_mask(abi.features_for(mode, mt.kind)) & offered)
            yield u, area, u.register(area.addr, area.length, abi.mode_value(mode))
    finally:
        mt.release(area)


def _try(u: uffd.Userfaultfd, ioctl: str, mt: memtypes.MemoryType, area: memtypes.Area
         ) -> str | None:
    """Call ``ioctl`` on the registered one-page ``area``: None when it worked, else errno."""
    n = area.length
    try:
        if ioctl == "zeropage":
            u.zeropage(area.addr, n, abi.UFFDIO_ZEROPAGE_MODE_DONTWAKE)
        elif ioctl == "move":
            probe.try_move(u, area.addr, n)
        elif ioctl == "writeprotect":
            u.writeprotect(area.addr, n, True)
        elif ioctl == "continue":
            u.continue_(area.addr, n, abi.UFFDIO_CONTINUE_MODE_DONTWAKE)
        else:
            raise AssertionError(f"the test does not know how to try {ioctl}")
    except uffd.UffdError as exc:
        return exc.errname
    return None


def _matrix(offered: int) -> dict[tuple[str, str], set[str]]:
    """(memory type, mode) -> the ioctls UFFDIO_REGISTER handed back, for every mode each
    memory type takes here; memory the kernel has none of (hugetlb) is left out."""
    out = {}
    for mt in memtypes.MEMORY_TYPES:
        for mode in dict.fromkeys(SINGLE_MODES + abi.MATRIX_MODES):
            try:
                with _registered(mt, mode, offered) as (_u, _area, mask):
                    out[(mt.name, mode)] = ioctl_reasons.ioctl_set(mask)
            except uffd.UffdError as exc:
                if exc.step == "memfd_create":
                    break  # no hugetlb of the default size on this kernel
                assert exc.step in ("register", "api"), exc
    return out


@pytest.fixture(scope="module")
def kernel() -> tuple[int, dict[tuple[str, str], set[str]]]:
    offered = _offered()
    return offered, _matrix(offered)


def _notes(offered: int, matrix: dict[tuple[str, str], set[str]]
           ) -> Iterator[tuple[str, str, ioctl_reasons.IoctlNote]]:
    others = set().union(*matrix.values())
    for (memory, mode), listed in matrix.items():
        mt = memtypes.MEMORY_BY_NAME[memory]
        registrable = {m for m in SINGLE_MODES if (memory, m) in matrix}
        for note in ioctl_reasons.explain(mt.kind, mode, listed, others, registrable):
            yield memory, mode, note


@pytest.mark.kernel
def test_every_ioctl_another_type_has_and_this_one_lacks_has_a_reason(kernel) -> None:  # type: ignore[no-untyped-def]
    offered, matrix = kernel
    assert matrix, "nothing registers on this kernel"
    for (memory, mode), listed in matrix.items():
        # Against every other memory type registered in the same mode, and every other
        # registration of any mode: each ioctl this one lacks is explained.
        explained = {n.ioctl for m, md, n in _notes(offered, matrix)
                     if (m, md) == (memory, mode) and n.status == MISSING}
        unexplained = {n.ioctl for m, md, n in _notes(offered, matrix)
                       if (m, md) == (memory, mode) and n.status == UNEXPLAINED}
        assert not unexplained, (memory, mode, unexplained)
        for (other, other_mode), theirs in matrix.items():
            lacking = theirs - listed
            assert lacking <= explained, (memory, mode, other, other_mode, lacking)


@pytest.mark.kernel
def test_every_refusal_the_table_claims_is_the_kernels(kernel) -> None:  # type: ignore[no-untyped-def]
    offered, matrix = kernel
    claims = [(memory, mode, n) for memory, mode, n in _notes(offered, matrix) if n.errno]
    if not claims:
        pytest.skip("no ioctl differs between memory types with a refusal on this kernel")
    for memory, mode, note in claims:
        mt = memtypes.MEMORY_BY_NAME[memory]
        with _registered(mt, mode, offered) as (u, area, _mask):
            assert _try(u, note.ioctl, mt, area) == note.errno, (memory, mode, note)


@pytest.mark.kernel
def test_move_is_listed_on_shmem_and_refused_with_einval(kernel) -> None:  # type: ignore[no-untyped-def]
    offered, matrix = kernel
    if not offered & abi.FEATURE_BY_KEY["move"].mask:
        pytest.skip("no UFFDIO_MOVE on this kernel (UFFD_FEATURE_MOVE, 6.8)")
    for memory in ("shmem", "shmem-private"):
        assert "move" in matrix[(memory, "missing")], memory
        notes = [n for m, md, n in _notes(offered, matrix) if (m, md) == (memory, "missing")]
        assert ("move", REFUSED, "EINVAL") in {(n.ioctl, n.status, n.errno) for n in notes}
        mt = memtypes.MEMORY_BY_NAME[memory]
        with _registered(mt, "missing", offered) as (u, area, _mask):
            assert _try(u, "move", mt, area) == "EINVAL"
    with _registered(memtypes.MEMORY_BY_NAME["anon"], "missing", offered) as (u, area, mask):
        assert "move" in ioctl_reasons.ioctl_set(mask)  # the one kind it works on
        assert _try(u, "move", memtypes.MEMORY_BY_NAME["anon"], area) is None


@pytest.mark.kernel
def test_hugetlb_lacks_zeropage_and_the_kernel_refuses_it(kernel) -> None:  # type: ignore[no-untyped-def]
    offered, matrix = kernel
    if ("hugetlb", "missing") not in matrix:
        pytest.skip("no hugetlb of the default huge page size on this kernel")
    assert "zeropage" not in matrix[("hugetlb", "missing")]
    assert "zeropage" in matrix[("shmem", "missing")]
    mt = memtypes.MEMORY_BY_NAME["hugetlb"]
    with _registered(mt, "missing", offered) as (u, area, _mask):
        assert _try(u, "zeropage", mt, area) == "EINVAL"


@pytest.mark.kernel
def test_the_demo_narrates_the_same_notes(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--backing", "anon", "--json", "--pages", "2")
    if res.returncode != 0 and "not offered" in res.stderr + res.stdout:
        pytest.skip(res.stderr.strip())
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    steps = [e for e in events if e.get("name") == "ioctl_difference"]
    registered = next(e for e in events if e.get("name") == "registered")
    # What the demo compared with: every range ioctl of this kernel build (fdinfo's API line).
    u, _ = access.open_uffd(kernel_faults=False)
    with u, open(f"/proc/self/fdinfo/{u.fd}") as f:
        offered = u.api(0)[0]
        built = next(int(line.split(":")[-1], 16) for line in f if line.startswith("API:"))
    # The notes for what UFFDIO_REGISTER handed back, with why a mode this kernel cannot
    # register on anonymous memory does not (arm64 before 6.10: no write-protect at all).
    handed = sum(abi.IOCTL_BY_KEY[k].mask for k in registered["ioctls"])
    want = demo.ioctl_notes("anon", "missing", handed, built, offered, support.here())
    assert [(s["ioctl"], s["status"], s["reason"]) for s in steps] == [
        (n.ioctl, n.status, n.reason) for n in want]
    assert all(s["text"] == ioctl_reasons.line(n) for s, n in zip(steps, want, strict=True))
    if "writeprotect" in ioctl_reasons.ioctl_set(built):
        assert "writeprotect" in {s["ioctl"] for s in steps}  # registered MISSING only


@pytest.mark.kernel
def test_probe_notes_rest_on_what_the_probe_saw() -> None:
    report = probe.run_probe()
    if report.api is None:
        pytest.skip("no userfaultfd opens here")
    notes = probe.ioctl_notes(report)
    assert not [n for n in notes if n.status == UNEXPLAINED], notes
    claimed = {(r.ioctl, r.memory, r.status): r.errno for r in abi.IOCTL_DIFFERENCES}
    for n in notes:
        cell = probe.widest(report, n.memory)
        assert cell is not None and cell.mode == n.mode, n
        if n.status == REFUSED:  # listed, and the probe's own try was refused (or untried)
            assert n.ioctl in cell.ioctls, n
            assert n.ioctl in cell.failing_ioctls or n.ioctl in cell.untested_ioctls, n
            kind = memtypes.MEMORY_BY_NAME[n.memory].kind
            assert n.errno == (cell.failing_ioctls.get(n.ioctl)
                               or claimed[(n.ioctl, kind, REFUSED)]), n
        else:
            assert n.ioctl not in cell.ioctls, n
