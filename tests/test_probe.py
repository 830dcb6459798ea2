"""`uffdctl probe` against the real kernel: the report equals what direct calls return, and the
unprivileged, seccomp-denied and no-huge-pages paths are run for real."""

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

from uffdctl import abi, access, kconfig, memtypes, probe, require, uffd

# Facts §9.3 (API features = 0 there; the probe requests the mode's own features, which does
# not change what REGISTER hands back).
EXPECTED_MASKS = {
    ("anon", "missing"): 0x13C, ("anon", "wp"): 0x17C, ("anon", "missing+wp"): 0x17C,
    ("shmem", "missing"): 0x13C, ("shmem", "wp"): 0x17C, ("shmem", "minor"): 0x1BC,
    ("shmem", "wp+minor"): 0x1FC, ("shmem-private", "minor"): 0x1BC,
    ("hugetlb", "missing"): 0x10C, ("hugetlb", "wp"): 0x14C, ("hugetlb", "minor"): 0x18C,
    ("hugetlb", "missing+wp+minor"): 0x1CC, ("hugetlb-private", "minor"): 0x18C,
}


def _json(stdout: str) -> dict[str, Any]:
    doc = json.loads(stdout)
    assert doc["schema_version"] == 1
    return doc


def test_api_equals_a_direct_handshake() -> None:
    report = probe.run_probe()
    with uffd.Userfaultfd.open() as u:
        features, ioctls = u.api(0)
    assert report.api is not None
    assert (report.api.features_mask, report.api.ioctls_mask) == (features, ioctls)
    offered = {f.name for f in report.api.features if f.offered}
    assert offered == set(abi.feature_names(features))
    assert all(f.usable for f in report.api.features if f.offered)  # root: all usable


def test_matrix_equals_real_registrations() -> None:
    report = probe.run_probe()
    for cell in report.matrix:
        if cell.memory.startswith("hugetlb"):
            continue
        area = memtypes.allocate(cell.memory, 1)
        try:
            with uffd.Userfaultfd.open() as u:
                u.api(0)
                try:
                    mask = u.register(area.addr, area.length, abi.mode_value(cell.mode))
                except uffd.UffdError as exc:
                    assert not cell.ok and cell.errno == exc.errname, cell
                    continue
        finally:
            memtypes.release(area)
        assert cell.ok and cell.ioctls_mask == mask, cell
        want = EXPECTED_MASKS.get((cell.memory, cell.mode))
        assert want is None or want == mask, cell
    # The kernel lists MOVE for shmem but it fails there (it is in the UFFD_API_RANGE_IOCTLS
    # that userfaultfd_register() lists for any non-hugetlb range); on anon it works.
    assert report.cell("missing", "shmem").failing_ioctls == {"move": "EINVAL"}  # type: ignore[union-attr]
    assert report.cell("missing", "anon").failing_ioctls == {}  # type: ignore[union-attr]
    assert report.cell("minor", "anon").status == "unsupported"  # type: ignore[union-attr]


def test_hugetlb_cells_without_and_with_free_pages(no_free_hugepages, hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        report = probe.run_probe()
    for cell in report.matrix:
        if cell.memory.startswith("hugetlb"):
            assert cell.status == "no-hugepages" and cell.errno == "ENOMEM", cell
            assert "nr_hugepages" in (cell.fix or "")
    with hugepages(2):
        report = probe.run_probe()
    for (memory, mode), mask in EXPECTED_MASKS.items():
        if memory.startswith("hugetlb"):
            cell = report.cell(mode, memory)
            assert cell is not None and cell.ok and cell.ioctls_mask == mask, cell
            assert not cell.failing_ioctls and not cell.untested_ioctls, cell


def test_json_has_the_documented_keys(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--json")
    assert res.returncode == 0, res.stderr
    doc = _json(res.stdout)
    assert doc["api"]["features_mask"] & 0x1FFFF == 0x1FFFF
    assert doc["api"]["ioctls_mask"] == 0x8000000000000003
    feat = {f["name"]: f for f in doc["api"]["features"]}
    assert feat["minor_hugetlbfs"] == {**feat["minor_hugetlbfs"], "bit": 9, "offered": True,
                                       "usable": True, "first": "5.13"}
    memories = {c["memory"] for c in doc["matrix"]}
    modes = {c["mode"] for c in doc["matrix"]}
    assert memories == {"anon", "shmem", "shmem-private", "hugetlb", "hugetlb-private"}
    assert modes == set(abi.MATRIX_MODES)
    cell = next(c for c in doc["matrix"] if (c["memory"], c["mode"]) == ("shmem", "minor"))
    assert cell["ok"] and cell["ioctls_mask"] == 0x1BC and "continue" in cell["ioctls"]
    assert cell["failing_ioctls"] == ["move"]


def test_json_path_does_not_import_rich(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--json", prefix=None, env={"PYTHONPROFILEIMPORTTIME": "1"})
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines()
                if line.startswith("import time:")}
    assert "uffdctl.probe" in imported
    assert not {m for m in imported if m == "rich" or m.startswith("rich.")}


def test_table_is_plain_when_piped(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe")
    assert res.returncode == 0, res.stderr
    assert "\x1b[" not in res.stdout
    for heading in ("Kernel", "Access (uid 0)", "API features", "Registration matrix",
                    "Huge pages"):
        assert heading in res.stdout
    assert "move listed but fails (EINVAL)" in res.stdout


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
])
def test_requirement_names(name: str, kind: str, key: str) -> None:
    req = require.parse_requirement(name)
    assert (req.kind, req.key) == (kind, key)


def test_unknown_requirement_suggests(run_cli) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(require.RequirementError, match="did you mean minor_hugetlbfs"):
        require.parse_requirement("minor_hugetlb")
    res = run_cli("probe", "--require", "minor_hugetlb")
    assert res.returncode == 2
    assert "did you mean minor_hugetlbfs" in res.stderr and "Traceback" not in res.stderr


def test_require_met_and_unmet(run_cli) -> None:  # type: ignore[no-untyped-def]
    ok = run_cli("probe", "-q", "--require", "minor:shmem,continue", "-r", "MINOR_SHMEM")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "", "")
    bad = run_cli("probe", "-q", "--require", "minor:anon", "-r", "rwp")
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 2
    assert "minor:anon not met" in lines[0] and "EINVAL" in lines[0]
    assert "rwp not met: not offered by kernel" in lines[1] and "7.3-rc" in lines[1]
    doc = _json(run_cli("probe", "--json", "-r", "minor:anon").stdout)
    assert doc["requirements"] == [{"name": "minor:anon", "kind": "cell", "key": "minor:anon",
                                    "met": False, "reason": doc["requirements"][0]["reason"]}]


def test_require_hugetlb_without_pages_says_why(run_cli, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        res = run_cli("probe", "-q", "--require", "minor:hugetlb")
    assert res.returncode == 1
    assert "no free huge pages" in res.stderr and "nr_hugepages" in res.stderr


# ----- unprivileged, for real ------------------------------------------------------------------

def test_nobody_with_sysctl_0(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    res = as_nobody("probe", "--json")
    assert res.returncode == 0, res.stderr
    doc = _json(res.stdout)
    methods = {m["name"]: m for m in doc["access"]["methods"]}
    assert methods[access.SYSCALL]["ok"] is False and methods[access.SYSCALL]["errno"] == "EPERM"
    assert "unprivileged_userfaultfd is 0" in methods[access.SYSCALL]["cause"]
    assert "UFFD_USER_MODE_ONLY" in methods[access.SYSCALL]["fix"]
    assert methods[access.USER_MODE_ONLY]["ok"] is True
    assert methods[access.DEV]["errno"] == "EACCES"
    assert doc["api"]["method"] == access.USER_MODE_ONLY
    fork = next(f for f in doc["api"]["features"] if f["name"] == "event_fork")
    assert (fork["offered"], fork["usable"], fork["errno"]) == (True, False, "EPERM")
    res = as_nobody("probe", "-q", "--require", "event_fork")
    assert res.returncode == 1 and "offered but not usable" in res.stderr


def test_nobody_with_sysctl_1(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "1")
    doc = _json(as_nobody("probe", "--json").stdout)
    methods = {m["name"]: m for m in doc["access"]["methods"]}
    assert methods[access.SYSCALL]["ok"] is True
    assert doc["api"]["method"] == access.SYSCALL


@pytest.mark.parametrize("err", ["ENOSYS", "EPERM"])
def test_seccomp_filter_is_named_as_the_cause(run_cli, err: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--json", prefix=seccomp.command(err, []))
    doc = _json(res.stdout)
    methods = {m["name"]: m for m in doc["access"]["methods"]}
    for name in (access.SYSCALL, access.USER_MODE_ONLY):
        assert methods[name]["errno"] == err
        assert "seccomp filter" in methods[name]["cause"], methods[name]
        assert "seccomp profile" in methods[name]["fix"]
    assert doc["access"]["seccomp"] == 2 and doc["access"]["seccomp_filters"] >= 1
    assert methods[access.DEV]["ok"] is True  # the filter does not cover the device path
    assert doc["api"]["method"] == access.DEV


def test_nothing_works_exits_3_with_the_cause(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    import subprocess

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


def test_kconfig_matches_the_kernels_config_line_by_line() -> None:
    import gzip

    cfg = kconfig.read(("CONFIG_USERFAULTFD",))
    if cfg is None:
        pytest.skip("this kernel's configuration is in none of " + ", ".join(kconfig.candidates()))
    opener = gzip.open if cfg.source.endswith(".gz") else open
    expected = {}
    with opener(cfg.source, "rt") as f:
        for line in f:
            if line.startswith("CONFIG_"):
                key, _, value = line.strip().partition("=")
                expected[key] = value
            elif line.startswith("# CONFIG_") and line.rstrip().endswith(" is not set"):
                expected[line.split()[1]] = "n"
    symbols = (*expected, "CONFIG_UFFDCTL_NO_SUCH_SYMBOL")
    assert kconfig.read(symbols) == (cfg.source,
                                     {**expected, "CONFIG_UFFDCTL_NO_SUCH_SYMBOL": "n"})


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
