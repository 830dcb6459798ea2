"""`uffdctl demo minor` on the real kernel: every byte verified, the kernel's flags as
delivered, and nothing leaked however the run ends."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
import seccomp
from conftest import NOBODY, ROOT

from uffdctl import demo, hugepages


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _summary(stdout: str) -> dict[str, Any]:
    events = _lines(stdout)
    assert events[-1]["event"] == "summary"
    return events[-1]


def _faults(stdout: str) -> list[dict[str, Any]]:
    return [e for e in _lines(stdout) if e["event"] == "fault"]


def _pool_state() -> tuple[int, int]:
    pool = hugepages.read_pools().pool()
    assert pool is not None
    return pool.nr, pool.free


def test_shmem_every_byte_verified(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--pages", "16", "--json")
    assert res.returncode == 0, res.stderr
    s = _summary(res.stdout)
    assert (s["ok"], s["pages"], s["faults"], s["minor"], s["missing"]) == (True, 16, 16, 16, 0)
    assert s["verified_bytes"] == 16 * os.sysconf("SC_PAGE_SIZE")
    assert s["backing"] == "shmem" and s["cpus"] == "same"
    assert set(s["latency_ns"]) == {"p50", "p90", "p99", "max"} and s["floor_ns"]["p50"] > 0
    faults = _faults(res.stdout)
    assert sorted(f["page"] for f in faults) == list(range(16))
    assert all(f["flags"] == ["MINOR"] and f["resolved_with"] == "continue" for f in faults)
    assert all(f["tid"] > 0 for f in faults)  # THREAD_ID delivered the faulting thread


def test_hugetlb_with_pages_reserved_by_the_fixture(run_cli, hugepages) -> None:  # type: ignore[no-untyped-def]
    with hugepages(8):
        res = run_cli("demo", "minor", "--pages", "4", "--json")
    assert res.returncode == 0, res.stderr
    s = _summary(res.stdout)
    assert (s["ok"], s["faults"], s["minor"], s["reserved_pages"]) == (True, 4, 4, 0)
    assert s["verified_bytes"] == 4 * 2 * 1024 * 1024
    # A hugetlb fault reports the start of the huge page.
    assert all(f["address"] % (2 << 20) == 0 for f in _faults(res.stdout))


def test_root_reserves_and_gives_back(run_cli, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        before = _pool_state()
        res = run_cli("demo", "minor", "--pages", "3", "--json")
        after = _pool_state()
    assert res.returncode == 0, res.stderr
    s = _summary(res.stdout)
    assert s["ok"] and s["reserved_pages"] == 6  # the registered area and the floor's
    assert any("given back" in e.get("text", "") for e in _lines(res.stdout))
    assert after == before


def test_no_reserve_without_pages_is_exit_3(run_cli, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        res = run_cli("demo", "minor", "--no-reserve")
    assert res.returncode == 3
    (line,) = res.stderr.strip().splitlines()
    assert "no free huge pages" in line and "--backing shmem" in line


def test_modify_contents_arrive(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--modify", "--json")
    assert res.returncode == 0, res.stderr
    assert _summary(res.stdout)["ok"]
    assert all(f["modified"] for f in _faults(res.stdout))


def test_write_faults_carry_write(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--write", "--json")
    assert res.returncode == 0, res.stderr
    s = _summary(res.stdout)
    assert s["ok"] and s["writes"] == s["pages"]
    assert all(f["flags"] == ["WRITE", "MINOR"] and f["flags_mask"] == 0x5
               for f in _faults(res.stdout))


@pytest.mark.parametrize("cpus", ["same", "spread", "any"])
def test_four_threads_one_fault_per_page(run_cli, cpus: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--threads", "4", "--pages", "32",
                  "--cpus", cpus, "--json")
    assert res.returncode == 0, res.stderr
    s = _summary(res.stdout)
    assert s["ok"] and s["faults"] == 32 and s["minor"] == 32 and s["messages"] >= 32
    assert s["cpus"] == cpus
    firsts = [f for f in _faults(res.stdout) if not f["duplicate"]]
    assert sorted(f["page"] for f in firsts) == list(range(32))


def test_wrong_resolution_is_caught(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--wrong-resolution", "--json")
    assert res.returncode == 1
    s = _summary(res.stdout)
    assert s["ok"] is False and s["mismatched_pages"] == list(range(8))
    assert s["verified_bytes"] == 0


def test_stalled_handler_times_out_and_releases_the_thread(run_cli) -> None:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    res = run_cli("demo", "minor", "--backing", "shmem", "--stall", "--timeout", "0.5",
                  "--json", timeout=30)
    assert res.returncode == 1
    s = _summary(res.stdout)
    assert s["ok"] is False and "no progress for 0.5 s" in s["error"]
    assert "released the waiting threads" in s["error"]
    assert time.monotonic() - t0 < 20


# ----- leaving nothing behind -----------------------------------------------------------------

def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _maps() -> list[str]:
    with open("/proc/self/maps") as f:
        return f.read().splitlines()


class _Interrupt:
    """An emit callback that raises KeyboardInterrupt at the n-th event: Ctrl-C at that point."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def __call__(self, _event: object) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def test_interrupt_at_every_event_releases_everything(hugepages) -> None:  # type: ignore[no-untyped-def]
    cfg = demo.DemoConfig(pages=4, threads=2)
    with hugepages(8):
        total = demo.run_demo(cfg, _Interrupt(0)).messages  # a full run counts the events
        assert total >= 4
        nr_free = _pool_state()
        fds, maps = _fds(), len(_maps())
        affinity = os.sched_getaffinity(0)
        n = 1
        while True:
            stop = _Interrupt(n)
            try:
                demo.run_demo(cfg, stop)
            except KeyboardInterrupt:
                pass
            else:
                break  # n passed the last event: every point has been tried
            assert _fds() == fds, f"fd leaked when interrupted at event {n}"
            assert len(_maps()) == maps, f"mapping leaked when interrupted at event {n}"
            assert _pool_state() == nr_free
            assert os.sched_getaffinity(0) == affinity
            n += 1
        assert n > 8


def test_sigint_at_random_moments(no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(1234)
    with no_free_hugepages():
        before = _pool_state()
        for _ in range(12):
            proc = subprocess.Popen(
                [sys.executable, "-m", "uffdctl", "demo", "minor", "--pages", "64",
                 "--threads", "2", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True, cwd=ROOT)
            time.sleep(rng.uniform(0.05, 0.5))
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
            if proc.returncode == -signal.SIGINT:
                # The default action, which Python has in place only before it starts and
                # after it has finished: either nothing ran or the whole run did.
                last = _lines(out)[-1] if out.strip() else {"event": "summary", "ok": True}
                assert last["event"] == "summary" and last["ok"], (out[-500:], err)
            else:
                assert proc.returncode in (0, 130), err
            assert "Traceback" not in err
            if proc.returncode == 130:
                assert err.strip().splitlines() == ["uffdctl: interrupted"]
            assert _pool_state() == before


# ----- unprivileged and denied ------------------------------------------------------------------

def test_nobody_without_huge_pages_is_exit_3(as_nobody, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages():
        res = as_nobody("demo", "minor")
    assert res.returncode == 3, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "no free huge pages" in line and "not root" in line and "--backing shmem" in line


def test_nobody_with_shmem_uses_user_mode_only(as_nobody, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    res = as_nobody("demo", "minor", "--backing", "shmem", "--json")
    assert res.returncode == 0, res.stderr
    events = _lines(res.stdout)
    assert events[-1]["ok"] and events[-1]["uffd_method"] == "syscall+user-mode-only"


def test_denied_userfaultfd_has_the_probe_diagnosis(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    cmd = seccomp.command("ENOSYS", NOBODY + [python, "-m", "uffdctl", "demo", "minor",
                                              "--backing", "shmem"])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert res.returncode == 3
    (line,) = res.stderr.strip().splitlines()
    assert "cannot open a userfaultfd" in line and "seccomp filter" in line
