"""What the demo tests share: reading the JSON lines, Ctrl-C at chosen or random moments,
the checks that nothing was left behind, and what the running kernel offers (asked of the
kernel itself, never a table of releases)."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import pytest
from conftest import ROOT

from uffdctl import abi, hugepages, memtypes, uffd

# The uffd markers of the hugetlb demos name features, not the probe's hugetlb cells
# ("minor:hugetlb"): the plugin probes once per session, and a hugetlb cell probed while the
# pool has no free page (a freshly booted kernel has none) reads "no free huge pages", which
# would skip the test although the demo reserves its own pages as root.
MINOR_HUGETLB = pytest.mark.uffd("minor_hugetlbfs")
WP_HUGETLB = pytest.mark.uffd("pagefault_flag_wp", "wp_hugetlbfs_shmem")


def offered_features() -> int:
    """The features this kernel's UFFDIO_API offers (asked on a throw-away descriptor)."""
    with uffd.Userfaultfd(uffd.open_with(abi.OPEN_METHODS[0])) as u:
        return u.api(0)[0]


def knows_user_mode_only() -> bool:
    """Does this kernel know UFFD_USER_MODE_ONLY?  Asked as root, who passes the permission
    check, so EINVAL here is the kernel not knowing the flag (fs/userfaultfd.c)."""
    try:
        fd = uffd.open_with(abi.OPEN_METHOD_BY_NAME["syscall+user-mode-only"])
    except uffd.UffdError as exc:
        if exc.errno == errno.EINVAL:
            return False
        raise
    os.close(fd)
    return True


def needs(mode: str, backing: str, is_async: bool = False) -> list[str]:
    """The features `demo MODE --backing BACKING` needs: abi.MODE_SUPPORT's, and WP_ASYNC
    for --async."""
    kind = memtypes.MEMORY_BY_NAME[backing].kind
    return [*abi.features_for(mode, kind), *(["wp_async"] if is_async else [])]


def lacking(mode: str, backing: str, offered: int, is_async: bool = False) -> list[str]:
    """What of that this kernel does not offer."""
    return [k for k in needs(mode, backing, is_async)
            if not offered & abi.FEATURE_BY_KEY[k].mask]


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def summary(stdout: str) -> dict[str, Any]:
    events = lines(stdout)
    assert events[-1]["event"] == "summary"
    return events[-1]


def faults(stdout: str) -> list[dict[str, Any]]:
    return [e for e in lines(stdout) if e["event"] == "fault"]


def pool_state() -> tuple[int, int]:
    pool = hugepages.read_pools().pool()
    assert pool is not None
    return pool.nr, pool.free


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def maps() -> int:
    with open("/proc/self/maps") as f:
        return len(f.read().splitlines())


class Interrupt:
    """An emit callback that raises KeyboardInterrupt at the n-th event: Ctrl-C at that
    point (0: never)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def __call__(self, _event: object) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def sigint_at_random_moments(args: list[str], runs: int, seed: int) -> None:
    """Run `uffdctl demo ARGS --json` and send SIGINT after a random delay, `runs` times:
    each run ends cleanly (0 or 130 with one line) and the huge page pool is as before."""
    rng = random.Random(seed)
    sigint_after(args, [rng.uniform(0.05, 0.5) for _ in range(runs)])


def sigint_after(args: list[str], delays: list[float]) -> None:
    """`uffdctl demo ARGS --json`, once per delay, with a SIGINT after that many seconds."""
    before = pool_state()
    for delay in delays:
        proc = subprocess.Popen([sys.executable, "-m", "uffdctl", "demo", *args, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        if "Traceback" in err and not out:
            # Ctrl-C while the interpreter itself starts (site, runpy finding the package):
            # Python's own report, before a line of ours runs, so nothing of ours in it.
            assert f"{ROOT}/uffdctl/" not in err, err
        elif proc.returncode == -signal.SIGINT:
            # The default action, which Python has in place only before it starts and
            # after it has finished: either nothing ran or the whole run did.
            last = lines(out)[-1] if out.strip() else {"event": "summary", "ok": True}
            assert last["event"] == "summary" and last["ok"], (out[-500:], err)
        else:
            assert proc.returncode in (0, 130), err
            assert "Traceback" not in err, err
        if proc.returncode == 130:
            assert err.strip().splitlines() == ["uffdctl: interrupted"]
        assert pool_state() == before


def assert_nobody_user_mode_only(res: subprocess.CompletedProcess[str]) -> None:
    """A demo as nobody with vm.unprivileged_userfaultfd=0: a kernel that knows
    UFFD_USER_MODE_ONLY (5.11) serves it through that flag; an older one refuses it with
    the sysctl as the cause and no flag it does not have in the fix."""
    if knows_user_mode_only():
        assert res.returncode == 0, res.stderr
        s = summary(res.stdout)
        assert s["ok"] and s["uffd_method"] == "syscall+user-mode-only"
        return
    assert res.returncode == 3, res.stderr
    (line,) = res.stderr.strip().splitlines()
    cause, _, fix = line.partition(" (fix: ")
    assert "cannot open a userfaultfd" in cause and "vm.unprivileged_userfaultfd is 0" in cause
    assert "seccomp" not in line and "UFFD_USER_MODE_ONLY" not in fix, line
