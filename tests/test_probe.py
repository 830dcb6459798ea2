"""`uffdctl probe` against the real kernel: the report equals what direct calls return, and the
unprivileged, seccomp-denied and no-huge-pages paths are run for real.

The tests marked `kernel` run in each kernel of tools/kernel-matrix, so what they expect comes
from the running kernel (its UFFDIO_API features, its errno, a registration done here) or from
the ABI tables combined with what the kernel offers, never from one release's values."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

import pytest
import seccomp
from conftest import IS_ROOT, NOBODY, ROOT
from demo_util import knows_user_mode_only

from uffdctl import abi, access, kconfig, memtypes, probe, require, uffd
from uffdctl import hugepages as hp
from uffdctl.render import documents


def _json(stdout: str) -> dict[str, Any]:
    doc = json.loads(stdout)
    assert doc["schema_version"] == documents.PROBE_SCHEMA_VERSION
    return doc


def _offered() -> int:
    """The features this kernel offers, from a handshake of this test's own."""
    with uffd.Userfaultfd.open() as u:
        return u.api(0)[0]


def _offers(offered: int, *keys: str) -> bool:
    return all(offered & abi.FEATURE_BY_KEY[k].mask for k in keys)


def _needs_offered(memory: str, mode: str, offered: int) -> bool:
    """Does the kernel offer what a program requests before registering ``mode`` on
    ``memory`` (abi.MODE_SUPPORT)?"""
    return _offers(offered, *abi.features_for(mode, memtypes.MEMORY_BY_NAME[memory].kind))


def _direct_register(memory: str, mode: str, huge_page_size: int | None = None) -> int | str:
    """What the kernel answers to a registration of ``mode`` on one page of ``memory`` made
    here, on MAP_NORESERVE memory as the probe does (no huge page needed): the ioctls mask
    it hands back, or the errno name."""
    area = memtypes.allocate(memory, 1, huge_page_size, noreserve=True)
    try:
        with uffd.Userfaultfd.open() as u:
            u.api(0)
            try:
                return u.register(area.addr, area.length, abi.mode_value(mode))
            except uffd.UffdError as exc:
                return exc.errname
    finally:
        memtypes.release(area)


def _expected_failing(memory: str, listed: list[str]) -> dict[str, str]:
    """The ioctls UFFDIO_REGISTER lists that cannot work on ``memory``: those no mode on that
    kind of memory can use (abi.MODE_SUPPORT).  The kernel lists UFFD_API_RANGE_IOCTLS for any
    non-hugetlb range, so MOVE (anonymous private only) shows up on shmem and fails with
    EINVAL there: the over-report of facts §10.7, wherever the kernel has MOVE at all."""
    kind = memtypes.MEMORY_BY_NAME[memory].kind
    works = {i for row in abi.MODE_SUPPORT if row.memory == kind for i in row.ioctls}
    return {name: "EINVAL" for name in listed if name not in works}


def _assert_cell_is_the_kernels(cell: probe.Cell, offered: int) -> None:
    """The probe's cell equals a registration made here, and a cell the kernel lacks the
    features for is said to be unsupported without trying (and a real registration fails)."""
    direct = _direct_register(cell.memory, cell.mode)
    if not _needs_offered(cell.memory, cell.mode, offered):
        assert (cell.status, cell.errno) == ("unsupported", None), cell
        assert "does not offer" in (cell.error or "") and "nr_hugepages" not in (cell.fix or "")
        assert isinstance(direct, str), (cell, hex(direct))
        return
    if isinstance(direct, str):
        assert not cell.ok and cell.errno == direct, (cell, direct)
        return
    assert cell.ok and cell.ioctls_mask == direct, (cell, hex(direct))
    assert cell.ioctls == abi.ioctl_names(direct)
    assert cell.failing_ioctls == _expected_failing(cell.memory, cell.ioctls), cell
    # Untried only where a try needs a page of its own and no huge page was free: capacity.
    assert all(name in probe.NEEDS_A_PAGE and why == probe.NO_FREE_HUGE_PAGE
               for name, why in cell.untested_ioctls.items()), cell
    assert not cell.untested_ioctls or cell.memory.startswith("hugetlb"), cell


@pytest.mark.kernel
def test_api_equals_a_direct_handshake() -> None:
    report = probe.run_probe()
    with uffd.Userfaultfd.open() as u:
        features, ioctls = u.api(0)
    assert report.api is not None
    assert (report.api.features_mask, report.api.ioctls_mask) == (features, ioctls)
    offered = {f.name for f in report.api.features if f.offered}
    assert offered == set(abi.feature_names(features))
    assert all(f.usable for f in report.api.features if f.offered)  # root: all usable


@pytest.mark.kernel
def test_matrix_equals_real_registrations() -> None:
    report = probe.run_probe()
    offered = _offered()
    for cell in report.matrix:  # hugetlb too: registering needs no free huge page
        _assert_cell_is_the_kernels(cell, offered)
    # Anonymous memory never takes MINOR (vma_can_userfault()): EINVAL from the kernel itself.
    minor_anon = report.cell("minor", "anon")
    assert minor_anon is not None
    assert (minor_anon.status, minor_anon.errno) == ("unsupported", "EINVAL")
    # MOVE is listed for shmem exactly when the kernel has it, and fails there; on anon it works.
    shmem, anon = report.cell("missing", "shmem"), report.cell("missing", "anon")
    assert shmem is not None and anon is not None
    has_move = _offers(offered, "move")
    assert ("move" in shmem.ioctls) == has_move == ("move" in anon.working_ioctls)
    assert shmem.failing_ioctls == ({"move": "EINVAL"} if has_move else {})
    assert anon.failing_ioctls == {}


@pytest.mark.kernel
def test_hugetlb_cells_without_and_with_free_pages(no_free_hugepages, hugepages) -> None:  # type: ignore[no-untyped-def]
    """A hugetlb cell is a capability: the same with an empty pool as with free pages.  Only
    the tries that put a page into the range (copy, continue) wait for a free page."""
    offered = _offered()
    with no_free_hugepages():
        pool = hp.read_pools().pool()
        empty = probe.run_probe()
        # Empty all along (another test run on this machine may add pages meanwhile).
        stayed_empty = pool is not None and pool.available == 0 == (
            hp.read_pools().pool() or pool).available
    cells = [c for c in empty.matrix if c.memory.startswith("hugetlb")]
    assert cells
    for cell in cells:
        if not _needs_offered(cell.memory, cell.mode, offered):
            # A mode the kernel cannot do at all (WP and MINOR on 5.10): "unsupported" before
            # any page is needed, and never "reserve huge pages".
            assert (cell.status, cell.errno) == ("unsupported", None), cell
            assert "nr_hugepages" not in (cell.fix or "") and "reserve" not in (cell.fix or "")
            continue
        _assert_cell_is_the_kernels(cell, offered)
        assert cell.ok and not cell.failing_ioctls, cell
        if stayed_empty:
            # Nothing free: what needs a page is untested, what does not was tried.
            assert set(cell.untested_ioctls) == set(cell.ioctls) & probe.NEEDS_A_PAGE, cell
            assert "copy" in cell.untested_ioctls, cell
    with hugepages(2):
        full = probe.run_probe()
    for cell in full.matrix:
        if cell.memory.startswith("hugetlb"):
            _assert_cell_is_the_kernels(cell, offered)
            assert not cell.untested_ioctls, cell  # every try had its page
            before = empty.cell(cell.mode, cell.memory)
            assert before is not None
            assert (before.status, before.errno, before.ioctls_mask, before.working_ioctls) == (
                cell.status, cell.errno, cell.ioctls_mask, cell.working_ioctls)


@pytest.mark.kernel
def test_register_needs_no_huge_page_of_any_size(no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    """For each huge page size the kernel has (/sys/kernel/mm/hugepages), a registration on
    MAP_NORESERVE hugetlbfs memory is the kernel's answer whatever the pool holds: the
    default pool emptied here, others as found (usually never populated: 1 GB)."""
    offered = _offered()
    pools = hp.read_pools().pools
    if not pools:
        pytest.skip(f"kernel {os.uname().release} has no huge page pools (no hugetlb)")
    with no_free_hugepages():
        for pool in hp.read_pools().pools:
            for memory in ("hugetlb", "hugetlb-private"):
                for mode in abi.MATRIX_MODES:
                    direct = _direct_register(memory, mode, pool.size)
                    if _needs_offered(memory, mode, offered):
                        assert isinstance(direct, int), (pool.size_kb, memory, mode, direct)
                        cell = probe.probe_cell(access.opener(access.SYSCALL), offered,
                                                memtypes.MEMORY_BY_NAME[memory], mode,
                                                check=False, huge_page_size=pool.size)
                        assert cell.ok and cell.ioctls_mask == direct, (pool.size_kb, cell)


@pytest.mark.kernel
def test_a_size_the_kernel_has_no_hugetlb_for_is_unsupported() -> None:
    """A huge page size with no hstate: memfd_create() fails with ENODEV
    (hugetlb_file_setup()), and the cell says the kernel cannot, with no "reserve" fix."""
    have = {p.size for p in hp.read_pools().pools}
    size = next(1 << shift for shift in range(16, 35) if (1 << shift) not in have)
    with pytest.raises(uffd.UffdError) as exc:
        memtypes.allocate("hugetlb", 1, size, noreserve=True)
    want = "ENODEV" if have else exc.value.errname  # no hugetlb at all: ENOSYS or ENOENT
    assert (exc.value.step, exc.value.errname) == ("memfd_create", want)
    cell = probe.probe_cell(access.opener(access.SYSCALL), _offered(),
                            memtypes.MEMORY_BY_NAME["hugetlb"], "missing", huge_page_size=size)
    assert (cell.status, cell.errno) == ("unsupported", want), cell
    assert f"no hugetlb pages of {size // 1024} kB" in (cell.error or ""), cell
    assert cell.fix and "nr_hugepages" not in cell.fix, cell


@pytest.mark.kernel
def test_json_has_the_documented_keys(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--json")
    assert res.returncode == 0, res.stderr
    doc = _json(res.stdout)
    with uffd.Userfaultfd.open() as u:
        features, ioctls = u.api(0)
    assert (doc["api"]["features_mask"], doc["api"]["ioctls_mask"]) == (features, ioctls)
    assert doc["api"]["ioctls"] == abi.ioctl_names(ioctls)
    assert set(doc["kernel"]) == {"release", "machine", "config", "config_source",
                                  "config_not_in_release"}
    feat = {f["name"]: f for f in doc["api"]["features"]}
    has_minor = _offers(features, "minor_hugetlbfs")
    assert feat["minor_hugetlbfs"] == {**feat["minor_hugetlbfs"], "bit": 9, "offered": has_minor,
                                       "usable": has_minor, "first": "5.13"}
    memories = {c["memory"] for c in doc["matrix"]}
    modes = {c["mode"] for c in doc["matrix"]}
    assert memories == {"anon", "shmem", "shmem-private", "hugetlb", "hugetlb-private"}
    assert modes == set(abi.MATRIX_MODES)
    cell = next(c for c in doc["matrix"] if (c["memory"], c["mode"]) == ("shmem", "minor"))
    assert set(cell) >= {"memory", "mode", "ok", "status", "errno", "error", "fix",
                         "ioctls_mask", "ioctls", "failing_ioctls", "failing",
                         "untested_ioctls"}
    # Capacity: every pool now, and each demo's outlook on hugetlb.
    pools = hp.read_pools().pools
    assert [(p["size_kb"], p["size"], p["total"]) for p in doc["capacity"]["hugepages"]] == [
        (p.size_kb, documents.size_name(p.size_kb), p.nr) for p in pools]
    assert [d["demo"] for d in doc["capacity"]["demos"]] == ["minor", "missing", "wp"]
    for d in doc["capacity"]["demos"]:
        assert set(d) == {"demo", "backing", "size_kb", "needs", "free", "can_run", "why"}
        assert d["backing"] == "hugetlb" and (d["why"] is None) is d["can_run"], d
    if _offers(features, "minor_shmem"):
        direct = _direct_register("shmem", "minor")
        assert cell["ok"] and cell["ioctls_mask"] == direct and "continue" in cell["ioctls"]
        assert cell["failing_ioctls"] == sorted(_expected_failing("shmem", cell["ioctls"]))
    else:
        assert (cell["ok"], cell["status"], cell["errno"]) == (False, "unsupported", None)
        assert cell["ioctls"] == [] and cell["failing_ioctls"] == []


def _config_lines(source: str) -> dict[str, str]:
    """The kernel's configuration file read here: symbol -> value, "n" for "is not set"."""
    import gzip

    opener = gzip.open if source.endswith(".gz") else open
    out = {}
    with opener(source, "rt") as f:
        for line in f:
            if line.startswith("CONFIG_"):
                key, _, value = line.strip().partition("=")
                out[key] = value
            elif line.startswith("# CONFIG_") and line.rstrip().endswith(" is not set"):
                out[line.split()[1]] = "n"
    return out


def _config_source() -> str | None:
    """The first of the places kconfig reads that exists here (Debian kernels have no
    /proc/config.gz: /boot/config-RELEASE)."""
    return next((p for p in kconfig.candidates() if os.access(p, os.R_OK)), None)


@pytest.mark.kernel
def test_table_is_plain_when_piped(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe")
    assert res.returncode == 0, res.stderr
    assert "\x1b[" not in res.stdout
    # The answer first, in one line; the kernel's own answers say what it must say.
    first = res.stdout.splitlines()[0]
    assert first.startswith("userfaultfd: kernel-mode faults via the syscall; "), first
    offered = _offered()
    kinds = [k for k, f in (("shmem", "minor_shmem"), ("hugetlb", "minor_hugetlbfs"))
             if _offers(offered, f)]
    assert (f"; minor on {' and '.join(kinds)}; " if kinds else "; no minor faults; ") in first
    pool = hp.read_pools().pool()
    assert pool is None or f"; {pool.available} free huge pages " \
        f"({documents.size_name(pool.size_kb).upper()})" in first, first
    for heading in ("Access (uid 0)", "API features", "Registration matrix", "Huge pages"):
        assert heading in res.stdout
    # The Kconfig checks, from wherever this kernel keeps its configuration; a symbol that
    # came after this release is said to be missing from it, not "not set" as if disabled.
    source = _config_source()
    if source is None:
        assert "no kernel configuration readable" in res.stdout
    else:
        assert f"Kernel (configuration read from {source})" in res.stdout
        lines = _config_lines(source)
        release = os.uname().release
        for sym in kconfig.SYMBOLS:
            first = kconfig.symbol_first(sym)
            if sym in lines:
                want = f"{sym}={lines[sym]}" if lines[sym] != "n" else f"{sym} is not set"
            elif first is not None and not abi.release_at_least(release, first):
                want = f"{sym}: not in this release (the symbol came in {first})"
                assert f"{sym} is not set" not in res.stdout
            else:
                want = f"{sym} is not set"  # an option nothing selects is not written at all
            assert want in res.stdout, want
    assert ("move listed but fails (EINVAL)" in res.stdout) == _offers(offered, "move")
    # `demo minor`'s outlook: no huge pages to reserve for a kernel without minor faults.
    assert ("cannot do `demo minor` on huge pages" in res.stdout) == (
        not _offers(offered, "minor_hugetlbfs"))


def test_json_path_does_not_import_rich(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--json", prefix=None, env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines()
                if line.startswith("import time:")}
    assert "uffdctl.probe" in imported
    assert not {m for m in imported if m == "rich" or m.startswith("rich.")}


# ----- --require and exit statuses -------------------------------------------------------------

@pytest.mark.parametrize("name,kind,key", [
    ("minor_hugetlbfs", "feature", "minor_hugetlbfs"),
    ("MINOR_HUGETLBFS", "feature", "minor_hugetlbfs"),
    ("UFFD_FEATURE_MINOR_HUGETLBFS", "feature", "minor_hugetlbfs"),
    ("minor:hugetlb", "cell", "minor:hugetlb"),
    ("hugetlb:minor", "cell", "minor:hugetlb"),
    ("missing+wp:anon", "cell", "missing+wp:anon"),
    ("continue", "ioctl", "continue"),
    ("UFFDIO_CONTINUE", "ioctl", "continue"),
    # The qualifier that accepts user-mode-only faults, on every kind of name.
    ("minor:shmem@user-mode", "cell", "minor:shmem"),
    ("shmem:minor@USER-MODE", "cell", "minor:shmem"),
    ("MINOR_SHMEM@user-mode", "feature", "minor_shmem"),
    ("continue @ user-mode", "ioctl", "continue"),
])
def test_requirement_names(name: str, kind: str, key: str) -> None:
    req = require.parse_requirement(name)
    assert (req.kind, req.key, req.text) == (kind, key, name)
    assert req.user_mode is ("@" in name)


@pytest.mark.parametrize("name,suggestion", [
    ("minor:shmem@user", "the one qualifier is @user-mode (user-mode faults are enough), "
                         "as in minor:shmem@user-mode"),
    ("minor:shmem@kernel", "kernel-mode faults are what minor:shmem alone asks for"),
    ("minor:shmem:user-mode", "did you mean minor:shmem@user-mode?"),
    ("minor_shmem_usermode_only", "did you mean minor_shmem@user-mode?"),
    ("minor:shmm@user-mode", "did you mean minor:shmem@user-mode"),
    ("xyzzy", "each optionally followed by @user-mode"),
])
def test_requirement_errors_suggest_the_qualifier(name: str, suggestion: str) -> None:
    with pytest.raises(require.RequirementError) as exc:
        require.parse_requirement(name)
    assert suggestion in str(exc.value)


def test_unknown_requirement_suggests(run_cli) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(require.RequirementError, match="did you mean minor_hugetlbfs"):
        require.parse_requirement("minor_hugetlb")
    res = run_cli("probe", "--require", "minor_hugetlb")
    assert res.returncode == 2
    assert "did you mean minor_hugetlbfs" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("probe", "--require", "minor:shmem@user_mode")
    assert res.returncode == 2
    assert "minor:shmem@user-mode" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.kernel
def test_require_met_and_unmet(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "-q", "--require", "minor:shmem,continue", "-r", "MINOR_SHMEM")
    if _offers(_offered(), "minor_shmem"):
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
    else:
        # A kernel without minor faults on shmem: each unmet, naming the release that added it.
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 3, lines
        first = abi.FEATURE_BY_KEY["minor_shmem"].first
        assert "minor:shmem not met: this kernel does not offer MINOR_SHMEM" in lines[0]
        assert f"added in {first}" in lines[0] and "(None)" not in lines[0]
        assert "continue not met" in lines[1]
        assert f"MINOR_SHMEM not met: not offered by kernel {os.uname().release} " \
               f"(added in {first})" in lines[2]
    bad = run_cli("probe", "-q", "--require", "minor:anon", "-r", "rwp")
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "minor:anon not met" in lines[0] and "EINVAL" in lines[0]
    assert "rwp not met: not offered by kernel" in lines[1] and "7.3-rc" in lines[1]
    doc = _json(run_cli("probe", "--json", "--no-ioctl-check", "-r", "minor:anon").stdout)
    assert doc["requirements"] == [{"name": "minor:anon", "kind": "cell", "key": "minor:anon",
                                    "needs_kernel_faults": True, "met": False,
                                    "reason": doc["requirements"][0]["reason"]}]


def test_require_hugetlb_holds_without_free_pages(run_cli, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    """minor:hugetlb is a capability: met with an empty pool where the kernel can do it (a
    free page is capacity: hugepages:... asks for that)."""
    with no_free_hugepages():
        res = run_cli("probe", "-q", "--no-ioctl-check", "--require", "minor:hugetlb")
    if _offers(_offered(), "minor_hugetlbfs"):
        assert (res.returncode, res.stderr) == (0, "")
    else:
        assert res.returncode == 1
        assert "does not offer MINOR_HUGETLBFS" in res.stderr and "nr_hugepages" not in res.stderr


# ----- unprivileged, for real ------------------------------------------------------------------

def test_nobody_with_sysctl_0(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    knows_umo = knows_user_mode_only()
    has_dev = os.path.exists(abi.DEV_USERFAULTFD)
    res = as_nobody("probe", "--json")
    doc = _json(res.stdout)
    methods = {m["name"]: m for m in doc["access"]["methods"]}
    syscall, umo, dev = (methods[access.SYSCALL], methods[access.USER_MODE_ONLY],
                         methods[access.DEV])
    # The cause is the sysctl (no seccomp filter here), and so is the fix.
    assert syscall["ok"] is False and syscall["errno"] == "EPERM"
    assert "unprivileged_userfaultfd is 0" in syscall["cause"]
    assert "seccomp" not in syscall["cause"] + syscall["fix"]
    assert "sysctl vm.unprivileged_userfaultfd=1" in syscall["fix"]
    assert "CAP_SYS_PTRACE" in syscall["fix"]
    # /dev/userfaultfd (6.1) is root's (0600) where it exists; never advised where it does not.
    assert dev["ok"] is False and dev["errno"] == ("EACCES" if has_dev else "ENOENT")
    if not has_dev:
        assert not any("/dev/userfaultfd" in (m["fix"] or "") for m in methods.values())
    if knows_umo:
        assert "UFFD_USER_MODE_ONLY" in syscall["fix"]
        assert umo["ok"] is True
        assert res.returncode == 0, res.stderr
        assert doc["api"]["method"] == access.USER_MODE_ONLY
        fork = next(f for f in doc["api"]["features"] if f["name"] == "event_fork")
        assert (fork["offered"], fork["usable"], fork["errno"]) == (True, False, "EPERM")
        res = as_nobody("probe", "-q", "--no-ioctl-check", "--require", "event_fork")
        assert res.returncode == 1 and "offered but not usable" in res.stderr
        return
    # A kernel without UFFD_USER_MODE_ONLY checks permission before flags (5.10's
    # new_userfaultfd()): EPERM for the flag too, from the sysctl and not from a seccomp
    # filter, and the flag is never recommended.
    assert not any("UFFD_USER_MODE_ONLY" in (m["fix"] or "") for m in methods.values())
    assert umo["ok"] is False and umo["errno"] == "EPERM"
    assert "predates UFFD_USER_MODE_ONLY" in umo["cause"], umo
    assert "unprivileged_userfaultfd is 0" in umo["cause"] and "seccomp" not in umo["cause"]
    assert "sysctl vm.unprivileged_userfaultfd=1" in umo["fix"]
    assert doc["api"] is None and doc["access"]["usable"] is False
    assert res.returncode == 3, res.stderr
    # The table says the same to a person: the cause and the working fix, nothing else.
    res = as_nobody("probe", "--no-ioctl-check")
    assert res.returncode == 3
    assert "no userfaultfd can be opened: vm.unprivileged_userfaultfd is 0" in res.stdout
    assert "sysctl vm.unprivileged_userfaultfd=1" in res.stdout
    assert "seccomp filter" not in res.stdout and "use UFFD_USER_MODE_ONLY" not in res.stdout


@pytest.mark.kernel
def test_nobody_with_sysctl_1(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "1")
    doc = _json(as_nobody("probe", "--json", "--no-ioctl-check").stdout)
    methods = {m["name"]: m for m in doc["access"]["methods"]}
    assert methods[access.SYSCALL]["ok"] is True
    assert doc["api"]["method"] == access.SYSCALL


@pytest.mark.parametrize("err", ["ENOSYS", pytest.param("EPERM", marks=pytest.mark.kernel)])
def test_seccomp_filter_is_named_as_the_cause(run_cli, err: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--json", "--no-ioctl-check", prefix=seccomp.command(err, []))
    doc = _json(res.stdout)
    methods = {m["name"]: m for m in doc["access"]["methods"]}
    for name in (access.SYSCALL, access.USER_MODE_ONLY):
        # Root is permitted, so the kernel would have answered 0 or EINVAL (a flag it does
        # not know): this errno is the filter's.
        assert methods[name]["errno"] == err
        assert "seccomp filter" in methods[name]["cause"], methods[name]
        assert "seccomp profile" in methods[name]["fix"]
    assert doc["access"]["seccomp"] == 2 and doc["access"]["seccomp_filters"] >= 1
    if os.path.exists(abi.DEV_USERFAULTFD):
        assert methods[access.DEV]["ok"] is True  # the filter does not cover the device path
        assert doc["api"]["method"] == access.DEV
        assert res.returncode == 0, res.stderr
    else:  # no /dev/userfaultfd (before 6.1): nothing is left
        assert methods[access.DEV]["errno"] == "ENOENT"
        assert doc["api"] is None and res.returncode == 3


@pytest.mark.kernel
def test_nothing_works_exits_3_with_the_cause(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    cmd = seccomp.command("ENOSYS",
                          NOBODY + [python, "-m", "uffdctl", "probe", "-r", "minor:shmem"])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd="/")
    assert res.returncode == 3, res.stderr
    assert "FAIL" in res.stdout and "seccomp filter" in res.stdout
    assert "no userfaultfd can be opened" in res.stderr and "Traceback" not in res.stderr


def test_hugetlbfs_mount_point_is_shown_inert(run_cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    target = tmp_path / "x\x1b]0;pwn\x07[bold]y"
    target.mkdir()
    res = subprocess.run(["mount", "-t", "hugetlbfs", "none", str(target)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount hugetlbfs here: {res.stderr.strip()}")
    try:
        out = run_cli("probe", "--no-ioctl-check").stdout
    finally:
        subprocess.run(["umount", str(target)], check=True)
    assert "\x1b]0;" not in out and "\x07" not in out
    assert "x\\x1b]0;pwn\\x07[bold]y" in out


@pytest.mark.parametrize("args", [["probe"], ["probe", "--json"], ["ps"], ["ps", "--json"],
                                  ["inspect", str(os.getpid())], ["--help"], ["--version"],
                                  ["demo", "minor", "--help"]])
def test_reader_going_away_is_not_a_failure(args: list[str]) -> None:
    """`uffdctl ps | head`: the pipe's reader is gone before uffdctl writes (EPIPE on the
    first write).  Exit 0 and nothing on stderr, tables (rich) and JSON alike."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run([sys.executable, "-m", "uffdctl", *args], stdout=write_end,
                             stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60,
                             env={**os.environ, "NO_COLOR": "1"})
    finally:
        os.close(write_end)
    assert (res.returncode, res.stderr) == (0, "")


@pytest.mark.kernel
def test_kconfig_matches_the_kernels_config_line_by_line() -> None:
    source = _config_source()
    if source is None:
        pytest.skip("this kernel's configuration is in none of " + ", ".join(kconfig.candidates()))
    cfg = kconfig.read(("CONFIG_USERFAULTFD",))
    assert cfg is not None and cfg.source == source  # the first place that has it
    expected = _config_lines(source)
    symbols = (*expected, "CONFIG_UFFDCTL_NO_SUCH_SYMBOL")
    assert kconfig.read(symbols) == (source, {**expected, "CONFIG_UFFDCTL_NO_SUCH_SYMBOL": "n"},
                                     frozenset({"CONFIG_UFFDCTL_NO_SUCH_SYMBOL"}))
    # The symbols probe reports: one the file has no line for is either off (nothing selects
    # it) or newer than this release (Debian's 5.10 has no CONFIG_HAVE_ARCH_USERFAULTFD_MINOR,
    # 5.13); only the latter is "not in this release".
    cfg = kconfig.read()
    assert cfg is not None
    absent = {s for s in kconfig.SYMBOLS if s not in expected}
    assert cfg.absent == absent
    release = os.uname().release
    newer = {}
    for sym in sorted(absent, key=kconfig.SYMBOLS.index):
        first = kconfig.symbol_first(sym)
        if first is not None and not abi.release_at_least(release, first):
            newer[sym] = first
    assert kconfig.not_in_release(cfg) == newer


# Each place a distribution keeps the configuration, made real in a private mount namespace:
# /proc/config.gz hidden (Debian and Ubuntu kernels have none), then a file at the place.
_HIDE_PROC_CONFIG = ("[ -e /proc/config.gz ] && mount --bind /dev/null /proc/config.gz; "
                     "mount -t tmpfs none /boot; mkdir -p /lib/modules; "
                     "mount -t tmpfs none /lib/modules; ")


@pytest.mark.parametrize("place", ["/boot/config-{r}", "/lib/modules/{r}/config", None])
def test_kconfig_read_where_distributions_keep_it(run_cli, place: str | None) -> None:  # type: ignore[no-untyped-def]
    if not IS_ROOT or shutil.which("unshare") is None:
        pytest.skip("a private mount namespace needs root and unshare")
    release = os.uname().release
    write = ""
    if place is not None:
        path = place.format(r=release)
        write = (f"mkdir -p {os.path.dirname(path)}; printf '%s\\n' 'CONFIG_USERFAULTFD=y' "
                 f"'# CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set' > {path}; ")
    script = _HIDE_PROC_CONFIG + write + f"exec {sys.executable} -m uffdctl probe --json " \
        "--no-ioctl-check"
    res = run_cli(prefix=["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    assert res.returncode == 0, res.stderr
    kernel = json.loads(res.stdout)["kernel"]
    if place is None:
        assert (kernel["config"], kernel["config_source"]) == (None, None)
    else:
        assert kernel["config_source"] == place.format(r=release)
        assert kernel["config"]["CONFIG_USERFAULTFD"] == "y"
        assert kernel["config"]["CONFIG_HAVE_ARCH_USERFAULTFD_WP"] == "n"
