"""`uffdctl demo minor` on the real kernel: every byte verified, the kernel's flags as
delivered, and nothing leaked however the run ends."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import pytest
import seccomp
from conftest import NOBODY, ROOT
from demo_util import (
    MINOR_HUGETLB,
    Interrupt,
    assert_nobody_user_mode_only,
    faults,
    fds,
    lacking,
    lines,
    maps,
    offered_features,
    pool_state,
    sigint_after,
    sigint_at_random_moments,
    summary,
)

from uffdctl import abi, advice, demo, errors, hugepages, scenarios, uffd

MINOR_SHMEM = pytest.mark.uffd("minor:shmem")


@pytest.mark.kernel
@MINOR_SHMEM
def test_shmem_every_byte_verified(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--pages", "16", "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert (s["ok"], s["pages"], s["faults"], s["minor"], s["missing"]) == (True, 16, 16, 16, 0)
    assert s["verified_bytes"] == 16 * os.sysconf("SC_PAGE_SIZE")
    assert s["backing"] == "shmem" and s["cpus"] == "same"
    # Read in one call (--touch bulk, the default): the per-fault cost, no per-touch figure.
    assert s["touch"] == "bulk" and s["per_fault_ns"] > 0 and s["latency_ns"] == {}
    assert s["floor_ns"]["p50"] > 0
    seen = faults(res.stdout)
    assert sorted(f["page"] for f in seen) == list(range(16))
    assert all(f["flags"] == ["MINOR"] and f["resolved_with"] == "continue" for f in seen)
    assert all(f["tid"] > 0 for f in seen)  # THREAD_ID delivered the faulting thread


@pytest.mark.kernel
@MINOR_HUGETLB
def test_hugetlb_with_pages_reserved_by_the_fixture(run_cli, hugepages) -> None:  # type: ignore[no-untyped-def]
    with hugepages(8):
        res = run_cli("demo", "minor", "--pages", "4", "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert (s["ok"], s["faults"], s["minor"], s["reserved_pages"]) == (True, 4, 4, 0)
    assert s["verified_bytes"] == 4 * 2 * 1024 * 1024
    # A hugetlb fault reports the start of the huge page.
    assert all(f["address"] % (2 << 20) == 0 for f in faults(res.stdout))


@pytest.mark.kernel
@MINOR_HUGETLB
def test_root_reserves_and_gives_back(run_cli, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        before = pool_state()
        res = run_cli("demo", "minor", "--pages", "3", "--json")
        after = pool_state()
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert s["ok"] and s["reserved_pages"] == 6  # the registered area and the floor's
    assert any("given back" in e.get("text", "") for e in lines(res.stdout))
    assert after == before


@MINOR_HUGETLB
def test_no_reserve_without_pages_is_exit_3(run_cli, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        res = run_cli("demo", "minor", "--no-reserve")
    assert res.returncode == 3
    (line,) = res.stderr.strip().splitlines()
    assert "no free huge pages" in line
    # The fix names shmem only where this kernel can do minor faults on shmem.
    shmem_works = not lacking("minor", "shmem", offered_features())
    assert ("--backing shmem" in line) == shmem_works, line


@MINOR_HUGETLB
@pytest.mark.parametrize("hide", [[], ["minor_shmem"]], ids=["as-is", "no-minor-shmem"])
def test_huge_page_fixes_name_only_backings_that_work(no_free_hugepages, hide: list[str]
                                                      ) -> None:  # type: ignore[no-untyped-def]
    """A kernel that does minor faults on hugetlbfs but not on shmem (5.13) must not be told
    "or use --backing shmem" when the huge pages run short."""
    class Hiding(uffd.Userfaultfd):
        """A real userfaultfd whose UFFDIO_API answer leaves out the hidden features."""

        def api(self, features: int = 0) -> tuple[int, int]:
            offered, ioctls = super().api(features)
            self.features = offered & ~abi.features_mask(hide)
            return self.features, ioctls

    def open_uffd() -> tuple[uffd.Userfaultfd, str]:
        return Hiding(uffd.open_with(abi.OPEN_METHODS[0])), "syscall"
    cfg = demo.DemoConfig(pages=2, reserve=False)
    with no_free_hugepages(), pytest.raises(errors.UffdctlError) as caught:
        demo.run_demo(scenarios.MINOR, cfg, lambda _e: None, open_uffd)
    assert caught.value.status == errors.UNAVAILABLE
    assert "no free huge pages" in caught.value.cause
    assert ("--backing shmem" in caught.value.fix) == (not hide), caught.value.fix


@pytest.mark.parametrize("euid", [0, 65534])
@pytest.mark.parametrize("works", [["hugetlb", "shmem"], ["hugetlb"], ["shmem"], []])
def test_probe_outlook_names_only_backings_that_work(works: list[str], euid: int) -> None:
    text = advice.demo_minor_outlook(hugepages.read_pools(), euid, works)
    if "shmem" not in works:
        assert "--backing shmem" not in text, text
    if "hugetlb" not in works:
        assert "cannot do `demo minor` on huge pages" in text, text
        assert ("--backing shmem" in text) == ("shmem" in works), text


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "backing"), [("minor", "hugetlb"), ("minor", "shmem"),
                                               ("wp", "shmem")])
def test_a_mode_the_kernel_lacks_is_refused_before_any_huge_page(
        run_cli, no_free_hugepages, mode: str, backing: str) -> None:  # type: ignore[no-untyped-def]
    """On a kernel without the mode: exit 3, one line naming what is missing and the newest
    release among it, a fix naming only backings that work here, and the huge page pool
    never touched.  On a kernel with it: the demo runs.  Which of the two comes from the
    kernel's own UFFDIO_API answer."""
    offered = offered_features()
    missing = lacking(mode, backing, offered)
    with no_free_hugepages():  # a hugetlb run that got as far as the pool would grow it
        before = pool_state()
        res = run_cli("demo", mode, "--backing", backing, "--pages", "2", "--json")
        after = pool_state()
    assert after == before
    assert "Traceback" not in res.stderr, res.stderr
    if not missing:
        assert res.returncode == 0, res.stderr
        assert summary(res.stdout)["ok"]
        return
    assert res.returncode == 3, res.stderr
    texts = [e.get("text", "") for e in lines(res.stdout)]
    assert not any("reserved" in t for t in texts), texts
    (line,) = res.stderr.strip().splitlines()
    cause, _, fix = line.partition(" (fix: ")
    assert all(abi.FEATURE_BY_KEY[k].name in cause for k in missing), line
    newest = max((abi.FEATURE_BY_KEY[k].first for k in missing), key=abi.release_tuple)
    if not abi.release_at_least(platform.release(), newest):
        assert f"added in {newest}" in cause and f"use a kernel {newest} or newer" in fix, line
    for other in scenarios.SCENARIOS[mode].backings:
        if other != backing:
            works = not lacking(mode, other, offered)
            assert (f"--backing {other}" in fix) == works, line


@MINOR_SHMEM
def test_modify_contents_arrive(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--modify", "--json")
    assert res.returncode == 0, res.stderr
    assert summary(res.stdout)["ok"]
    assert all(f["modified"] for f in faults(res.stdout))


@MINOR_SHMEM
def test_write_faults_carry_write(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--write", "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert s["ok"] and s["writes"] == s["pages"]
    assert all(f["flags"] == ["WRITE", "MINOR"] and f["flags_mask"] == 0x5
               for f in faults(res.stdout))


@MINOR_SHMEM
@pytest.mark.parametrize("cpus", ["same", "spread", "any"])
def test_four_threads_one_fault_per_page(run_cli, cpus: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--threads", "4", "--pages", "32",
                  "--cpus", cpus, "--json")
    assert res.returncode == 0, res.stderr
    s = summary(res.stdout)
    assert s["ok"] and s["faults"] == 32 and s["minor"] == 32 and s["messages"] >= 32
    assert s["cpus"] == cpus
    firsts = [f for f in faults(res.stdout) if not f["duplicate"]]
    assert sorted(f["page"] for f in firsts) == list(range(32))


@MINOR_SHMEM
def test_wrong_resolution_is_caught(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--wrong-resolution", "--json")
    assert res.returncode == 1
    s = summary(res.stdout)
    assert s["ok"] is False and s["mismatched_pages"] == list(range(8))
    assert s["verified_bytes"] == 0


@MINOR_SHMEM
def test_stalled_handler_times_out_and_releases_the_thread(run_cli) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    res = run_cli("demo", "minor", "--backing", "shmem", "--stall", "--timeout", "0.5",
                  "--json", timeout=30)
    assert res.returncode == 1
    s = summary(res.stdout)
    assert s["ok"] is False and "no progress for 0.5 s" in s["error"]
    assert "released the waiting threads" in s["error"]
    assert time.monotonic() - t0 < 20


# ----- leaving nothing behind -----------------------------------------------------------------

@MINOR_HUGETLB
def test_interrupt_at_every_event_releases_everything(hugepages) -> None:  # type: ignore[no-untyped-def]
    cfg = demo.DemoConfig(pages=4, threads=2)
    with hugepages(8):
        total = scenarios.run(cfg, Interrupt(0)).messages  # a full run counts the events
        assert total >= 4
        nr_free = pool_state()
        fds_before, maps_before = fds(), maps()
        affinity = os.sched_getaffinity(0)
        n = 1
        while True:
            stop = Interrupt(n)
            try:
                scenarios.run(cfg, stop)
            except KeyboardInterrupt:
                pass
            else:
                break  # n passed the last event: every point has been tried
            assert fds() == fds_before, f"fd leaked when interrupted at event {n}"
            assert maps() == maps_before, f"mapping leaked when interrupted at event {n}"
            assert pool_state() == nr_free
            assert os.sched_getaffinity(0) == affinity
            n += 1
        assert n > 8


@MINOR_HUGETLB
def test_sigint_at_random_moments(no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        sigint_at_random_moments(["minor", "--pages", "64", "--threads", "2"], 12, 1234)


@MINOR_HUGETLB
def test_sigint_while_starting(no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C while the interpreter imports: a KeyboardInterrupt raised inside a class body
    reaches main() wrapped in RuntimeError on Python < 3.12 (once seen in CI as an
    "internal error"); it must still read as an interrupt."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "uffdctl", "--version"], capture_output=True,
                   check=True, cwd=ROOT)
    startup = time.monotonic() - start
    with no_free_hugepages():
        sigint_after(["minor", "--pages", "8"], [startup * i / 10 for i in range(4, 20)])


def test_wrapped_interrupt_reads_as_interrupt() -> None:
    class Descriptor:
        def __set_name__(self, owner: type, name: str) -> None:
            raise KeyboardInterrupt

    try:
        type("Wrapped", (), {"field": Descriptor()})
    except BaseException as exc:  # RuntimeError before 3.12, KeyboardInterrupt after
        assert errors.caused_by_interrupt(exc)
    else:
        raise AssertionError("__set_name__ raised nothing")
    assert not errors.caused_by_interrupt(RuntimeError(ValueError("x")))


# ----- unprivileged and denied ------------------------------------------------------------------

@MINOR_HUGETLB
def test_nobody_without_huge_pages_is_exit_3(as_nobody, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        res = as_nobody("demo", "minor")
    assert res.returncode == 3, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "no free huge pages" in line and "not root" in line
    shmem_works = not lacking("minor", "shmem", offered_features())
    assert ("--backing shmem" in line) == shmem_works, line


@MINOR_SHMEM
def test_nobody_with_shmem_uses_user_mode_only(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    assert_nobody_user_mode_only(as_nobody("demo", "minor", "--backing", "shmem", "--json"))


@pytest.mark.kernel
def test_denied_userfaultfd_has_the_probe_diagnosis(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    cmd = seccomp.command("ENOSYS", NOBODY + [python, "-m", "uffdctl", "demo", "minor",
                                              "--backing", "shmem"])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert res.returncode == 3
    (line,) = res.stderr.strip().splitlines()
    assert "cannot open a userfaultfd" in line and "seccomp filter" in line


def test_caught_interrupt_in_exec_keeps_the_exit_status(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A Ctrl-C that lands while a dataclass is made (exec of a string) and is then caught
    must still end with uffdctl's status, not with CPython re-raising SIGINT at exit."""
    (tmp_path / "ctrl_c_in_exec.py").write_text(
        "from uffdctl.cli import main\n"
        "try:\n"
        "    exec('raise KeyboardInterrupt')\n"
        "except KeyboardInterrupt:\n"
        "    pass\n"
        "main(['--version'])\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    res = subprocess.run([sys.executable, "-m", "ctrl_c_in_exec"], capture_output=True,
                         text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("uffdctl ")
