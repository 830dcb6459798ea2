"""Kernel-mode faults or nothing: `probe --require`, the flat formats and the pytest marker as
the unprivileged users who hit the false positives, for real.

A UFFD_USER_MODE_ONLY descriptor (5.11) registers like any other, but handle_userfault()
(fs/userfaultfd.c) fails a fault without FAULT_FLAG_USER: the syscall touching the page gets
EFAULT, a Firecracker vCPU "Bad address".  From 5.11 it is all `nobody` gets with
vm.unprivileged_userfaultfd=0, so there every requirement must be unmet unless it says
@user-mode, and every flat format must say "not available".  What is expected comes from the
running kernel (does root's handshake offer MINOR_SHMEM, does it know the flag), so the tests
marked `kernel` hold on each kernel of tools/kernel-matrix: on 5.10 nothing opens as nobody
with the sysctl at 0, and everything is unmet with the sysctl as the cause.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, NOBODY
from demo_util import knows_user_mode_only

from uffdctl import abi, access, uffd
from uffdctl.render import documents, formats

pytest_plugins = ["pytester"]

Run = Callable[..., subprocess.CompletedProcess[str]]
KERNEL_MODE_REFUSED = "kernel-mode faults are refused"


def _offers_minor_shmem() -> bool:
    """Does this kernel offer MINOR_SHMEM (5.14)?  Root's own handshake says."""
    with uffd.Userfaultfd.open() as u:
        return bool(u.api(0)[0] & abi.FEATURE_BY_KEY["minor_shmem"].mask)


def _kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def _doc(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    doc = json.loads(res.stdout)
    assert doc["schema_version"] == documents.PROBE_SCHEMA_VERSION
    return doc


# ----- nobody, vm.unprivileged_userfaultfd=0 -------------------------------------------------

@pytest.mark.kernel
def test_require_as_nobody_with_sysctl_0(as_nobody: Run, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    knows_umo, minor_shmem = knows_user_mode_only(), _offers_minor_shmem()
    res = as_nobody("probe", "--json", "--no-ioctl-check", "-r", "minor:shmem",
                    "-r", "minor:shmem@user-mode", "-r", "missing:anon@user-mode")
    doc = _doc(res)
    reqs = {r["name"]: r for r in doc["requirements"]}
    assert [r["needs_kernel_faults"] for r in reqs.values()] == [True, False, False]
    kernel_mode = reqs["minor:shmem"]
    assert kernel_mode["met"] is False
    if not knows_umo:
        # 5.10: the flag is unknown and permission is checked first: nothing opens, every
        # requirement is unmet with the sysctl as the cause, exit 3 as documented.
        assert doc["api"] is None and res.returncode == 3, res.stderr
        for r in reqs.values():
            assert r["met"] is False
            assert r["reason"].startswith("no userfaultfd can be opened: ")
            assert "vm.unprivileged_userfaultfd is 0" in r["reason"]
        return
    # Probed through the only method that opens, and said so.
    assert (doc["api"]["method"], doc["api"]["kernel_faults"]) == (access.USER_MODE_ONLY, False)
    methods = {m["name"]: m for m in doc["access"]["methods"]}
    assert methods[access.USER_MODE_ONLY]["kernel_faults"] is False
    # Unmet (exit 1, the status of an unmet requirement), with why kernel-mode faults are
    # refused (the syscall's cause), the fix, and the qualifier that accepts user-mode faults;
    # never "use UFFD_USER_MODE_ONLY", the descriptor that cannot serve this requirement.
    assert res.returncode == 1, res.stderr
    reason = kernel_mode["reason"]
    assert KERNEL_MODE_REFUSED in reason
    assert "vm.unprivileged_userfaultfd is 0" in reason
    assert "sysctl vm.unprivileged_userfaultfd=1" in reason
    assert "UFFD_USER_MODE_ONLY" not in reason
    if minor_shmem:
        assert reason.startswith("holds only with user-mode faults")
        assert reason.endswith("require minor:shmem@user-mode")
    else:  # 5.11 to 5.13: no minor faults on shmem at all, and no kernel-mode faults either
        assert "does not offer MINOR_SHMEM" in reason
    (line,) = res.stderr.strip().splitlines()
    assert line == f"uffdctl: requirement minor:shmem not met: {reason}"
    # With the qualifier a user-mode-only descriptor counts: met where the kernel can do it.
    assert reqs["minor:shmem@user-mode"]["met"] is minor_shmem
    assert reqs["missing:anon@user-mode"]["met"] is True
    assert "user-mode faults only" in reqs["missing:anon@user-mode"]["reason"]
    alone = as_nobody("probe", "-q", "--no-ioctl-check", "-r", "minor:shmem@user-mode")
    assert (alone.returncode, alone.stdout) == ((0, "") if minor_shmem else (1, "")), alone.stderr


@pytest.mark.kernel
def test_flat_formats_as_nobody_with_sysctl_0(as_nobody: Run, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    knows_umo = knows_user_mode_only()
    method = formats.fact_name(access.USER_MODE_ONLY) if knows_umo else "none"

    def run(fmt: str) -> str:
        res = as_nobody("probe", "--format", fmt, "--no-ioctl-check")
        # Something opens (the user-mode-only descriptor), or nothing does (5.10): a flat
        # format exits 0 either way (the latter with the cli.py change of issue 14).
        assert res.returncode == 0 or not knows_umo, (fmt, res.returncode, res.stderr)
        return res.stdout

    def check(values: dict[str, str], true: str, false: str) -> None:
        """Not available, no kernel-mode faults, and every feature, cell and ioctl false,
        each present whether probed (through the user-mode-only descriptor) or not (nothing
        opened); user_mode_faults says whether the user-mode-only descriptor opened."""
        assert values.pop("user_mode_faults") == (true if knows_umo else false)
        assert values.pop("method") == method
        # An NFD label value allows [A-Za-z0-9_.-] only: Debian's "6.12.117+deb12-amd64"
        # is "6.12.117_deb12-amd64" there.
        release = os.uname().release
        assert values.pop("kernel") in (release, re.sub(r"[^A-Za-z0-9_.-]", "_", release))
        reason = values.pop("reason", None)  # not an NFD label
        assert reason is None or "vm.unprivileged_userfaultfd is 0" in reason, reason
        assert values["userfaultfd"] == values["kernel_faults"] == false
        assert values["cell_minor_shmem"] == values["feature_minor_shmem"] == false
        assert values["cell_missing_anon"] == values["ioctl_copy"] == false
        capacity = {k: values.pop(k) for k in list(values) if k.startswith("capacity_")}
        assert not capacity or all(capacity[f"capacity_demo_{d}_hugetlb"] in (true, false)
                                   for d in formats.DEMOS), capacity  # nfd: none
        assert {k for k, v in values.items() if v != false} == set(), values

    env = _kv(run("env"))
    assert env["UFFD_AVAILABLE"] == env["UFFD_KERNEL_FAULTS"] == "0"
    env["UFFD_USERFAULTFD"] = env.pop("UFFD_AVAILABLE")
    env["UFFD_REASON"] = env["UFFD_REASON"].strip("'")
    check({k.removeprefix("UFFD_").lower(): v for k, v in env.items()}, "1", "0")
    check(_kv(run("github")), "true", "false")
    prefix = formats.NFD_PREFIX + "/"
    nfd = {k.removeprefix(prefix).replace("-", "_"): v for k, v in _kv(run("nfd")).items()}
    assert not any(k.startswith("capacity_") for k in nfd) and "reason" not in nfd
    check(nfd, "true", "false")
    facts = json.loads(run("facts"))
    assert (facts.pop("available"), facts.pop("schema_version")) == (
        False, documents.PROBE_SCHEMA_VERSION)
    check({k: str(v) for k, v in facts.items()}, "True", "False")


def _nobody_pytest_env(python: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` with pytest importable by uid 65534: as it is, or from a world-readable copy
    of pytest and what it needs (the venv may sit under /root, 0700)."""
    if subprocess.run(NOBODY + [python, "-c", "import pytest"], env=env, cwd="/",
                      capture_output=True).returncode == 0:
        return env
    import _pytest
    import iniconfig
    import packaging
    import pluggy

    tmp = tempfile.mkdtemp(prefix="uffdctl-nobody-pytest-")
    for mod in (pytest, _pytest, pluggy, iniconfig, packaging):
        shutil.copytree(Path(mod.__file__ or "").parent, Path(tmp) / mod.__name__)
    subprocess.run(["chmod", "-R", "a+rX", tmp], check=True)
    return {**env, "PYTHONPATH": env["PYTHONPATH"] + ":" + tmp}


@pytest.fixture
def nobody_pytest(nobody_python: tuple[str, dict[str, str]]) -> Iterator[Run]:
    """``nobody_pytest(source)``: pytest as uid 65534 on one test file, with uffdctl's plugin
    (named, not found through entry points: the copy nobody imports may have none)."""
    python, env = nobody_python
    env = _nobody_pytest_env(python, env)
    work = tempfile.mkdtemp(prefix="uffdctl-nobody-tests-")
    os.chmod(work, 0o755)

    def run(source: str) -> subprocess.CompletedProcess[str]:
        path = Path(work) / "test_marked.py"
        path.write_text(source)
        path.chmod(0o644)
        return subprocess.run(
            NOBODY + [python, "-m", "pytest", "-p", "uffdctl.pytest_plugin", "-p",
                      "no:cacheprovider", "-v", "-rs", str(path)],
            env={**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, cwd=work,
            capture_output=True, text=True, timeout=300)
    try:
        yield run
    finally:
        shutil.rmtree(work, ignore_errors=True)
        extra = env["PYTHONPATH"].split(":")[-1]
        if "uffdctl-nobody-pytest-" in extra:
            shutil.rmtree(extra, ignore_errors=True)


@pytest.mark.kernel
def test_marker_skips_as_nobody_with_sysctl_0(nobody_pytest: Run, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    knows_umo, minor_shmem = knows_user_mode_only(), _offers_minor_shmem()
    res = nobody_pytest("""
import pytest

@pytest.mark.uffd("minor:shmem")
def test_kernel_mode():
    pass

@pytest.mark.uffd("minor:shmem@user-mode")
def test_user_mode():
    pass

@pytest.mark.uffd("missing:anon@user-mode")
def test_user_mode_anon():
    pass
""")
    outcomes = dict(re.findall(r"::(\w+) (PASSED|SKIPPED|FAILED|ERROR)", res.stdout))
    assert set(outcomes) == {"test_kernel_mode", "test_user_mode", "test_user_mode_anon"}, (
        res.stdout + res.stderr)
    assert outcomes["test_kernel_mode"] == "SKIPPED"
    # Each skip at the test that asked (test_marked.py, the test's line), with its own
    # requirement: never at the plugin's file, never merged with another test's.
    reasons = re.findall(r"^SKIPPED \[(\d+)\] (\S+?):\d+: (.*)$", res.stdout, re.M)
    assert all(n == "1" and where == "test_marked.py" for n, where, _ in reasons), reasons
    if not knows_umo:
        assert set(outcomes.values()) == {"SKIPPED"} and len(reasons) == 3, res.stdout
        asked = sorted(why.split(" not available: ")[0] for _, _, why in reasons)
        assert asked == ["uffd: minor:shmem", "uffd: minor:shmem@user-mode",
                         "uffd: missing:anon@user-mode"], asked
        assert all("no userfaultfd can be opened: " in why and "vm.unprivileged_userfaultfd "
                   "is 0" in why and "fix: " in why for _, _, why in reasons), reasons
        return
    skipped = next(line for line in res.stdout.splitlines()
                   if line.startswith("SKIPPED") and "minor:shmem not available" in line)
    assert KERNEL_MODE_REFUSED in skipped and "vm.unprivileged_userfaultfd is 0" in skipped
    assert outcomes["test_user_mode"] == ("PASSED" if minor_shmem else "SKIPPED")
    assert outcomes["test_user_mode_anon"] == "PASSED"


# ----- kernel-mode faults: sysctl 1, root, an accessible /dev/userfaultfd --------------------

@pytest.mark.kernel
def test_nobody_with_sysctl_1_has_kernel_mode_faults(as_nobody: Run, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "1")
    minor_shmem = _offers_minor_shmem()
    res = as_nobody("probe", "--json", "--no-ioctl-check", "-r", "minor:shmem",
                    "-r", "missing:anon")
    doc = _doc(res)
    assert (doc["api"]["method"], doc["api"]["kernel_faults"]) == (access.SYSCALL, True)
    reqs = {r["name"]: r for r in doc["requirements"]}
    assert reqs["missing:anon"]["met"] is True
    assert reqs["minor:shmem"]["met"] is minor_shmem  # 5.10 has no minor faults at all
    assert KERNEL_MODE_REFUSED not in reqs["minor:shmem"]["reason"]
    assert res.returncode == (0 if minor_shmem else 1), res.stderr
    env = _kv(as_nobody("probe", "--format", "env", "--no-ioctl-check").stdout)
    assert (env["UFFD_AVAILABLE"], env["UFFD_KERNEL_FAULTS"], env["UFFD_USER_MODE_FAULTS"],
            env["UFFD_METHOD"]) == ("1", "1", "1", "syscall")
    assert env["UFFD_CELL_MINOR_SHMEM"] == env["UFFD_FEATURE_MINOR_SHMEM"] == (
        "1" if minor_shmem else "0")
    assert env["UFFD_REASON"] == "''"  # kernel-mode faults work: no cause


def test_root_has_kernel_mode_faults(run_cli: Run) -> None:
    if not IS_ROOT:
        pytest.skip("the syscall with all faults needs CAP_SYS_PTRACE here")
    res = run_cli("probe", "--json", "--no-ioctl-check", "-r", "missing:anon",
                  "-r", "missing:anon@user-mode")
    assert res.returncode == 0, res.stderr
    doc = _doc(res)
    assert (doc["api"]["method"], doc["api"]["kernel_faults"]) == (access.SYSCALL, True)
    assert [(r["needs_kernel_faults"], r["met"], r["reason"]) for r in doc["requirements"]] == [
        (True, True, "registers"), (False, True, "registers")]
    facts = formats.facts(doc)
    assert (facts["userfaultfd"], facts["kernel_faults"], facts["user_mode_faults"]) == (
        True, True, True)
    assert formats.method(doc) == facts["method"] == "syscall" and facts["reason"] == ""


@pytest.mark.kernel
def test_accessible_device_gives_nobody_kernel_mode_faults(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    """/dev/userfaultfd 0666 (a node of the same device in a private mount namespace): the
    device's file mode is its only check (6.1), so nobody with the sysctl at 0 gets kernel-mode
    faults there, and the API and matrix are probed through it, not through the weaker
    UFFD_USER_MODE_ONLY that opens too."""
    if not os.path.exists(abi.DEV_USERFAULTFD):
        pytest.skip(f"kernel {os.uname().release} has no {abi.DEV_USERFAULTFD} (added in "
                    f"{abi.OPEN_METHOD_BY_NAME[access.DEV].first})")
    if shutil.which("unshare") is None:
        pytest.skip("a private mount namespace needs unshare")
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    rdev = os.stat(abi.DEV_USERFAULTFD).st_rdev
    node_dir = tempfile.mkdtemp(prefix="uffdctl-devnode-")
    probe = NOBODY + [python, "-m", "uffdctl", "probe", "--json", "--no-ioctl-check",
                      "-r", "missing:anon"]
    script = (f"mount -t tmpfs -o mode=0755 none {node_dir} && "
              f"mknod -m 0666 {node_dir}/uffd c {os.major(rdev)} {os.minor(rdev)} && "
              f"mount --bind {node_dir}/uffd {abi.DEV_USERFAULTFD} && "
              f"exec {shlex.join(probe)}")
    try:
        res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                             capture_output=True, text=True, env=env, cwd="/", timeout=120)
    finally:
        os.rmdir(node_dir)
    assert res.returncode == 0, res.stderr
    doc = _doc(res)
    methods = {m["name"]: m["ok"] for m in doc["access"]["methods"]}
    assert methods[access.SYSCALL] is False and methods[access.DEV] is True
    assert (doc["api"]["method"], doc["api"]["kernel_faults"]) == (access.DEV, True)
    assert doc["requirements"][0]["met"] is True


# ----- the qualifier where a test suite writes it --------------------------------------------

def test_marker_qualifier_errors_suggest_user_mode(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.uffd("minor:shmem@user")
        def test_typo():
            pass
    """)
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*unknown qualifier '@user'*minor:shmem@user-mode*"])


def test_man_page_states_the_schema_version() -> None:
    page = (Path(__file__).resolve().parent.parent / "man" / "uffdctl-probe.1").read_text()
    version = documents.PROBE_SCHEMA_VERSION
    assert f'"schema_version": {version},' in page
    assert f"is {version}:" in page.split(".I schema_version", 1)[1][:20]
