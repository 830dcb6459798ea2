"""Huge pages are given back however a run ends, and concurrent runs do not take each other's.

Every test runs the real tool (``python -m uffdctl``) as a child process in the real
condition: a real signal at a random moment, a real SIGKILL, two demos started at once on a
pool that can serve only one.  The pool is checked against what it was before, and no record
is left under /run/uffdctl/hugepages.

Exit statuses: SIGTERM 143, SIGHUP 129, SIGQUIT 131 (128 + the signal number, as shells
report it), with one line "uffdctl: terminated by SIGTERM" (SIGHUP, SIGQUIT) on stderr.
"""

from __future__ import annotations

import glob
import json
import os
import random
import re
import resource
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from conftest import IS_ROOT, ROOT
from demo_util import lines, pool_state, summary

from uffdctl import hugepages as hp

NoFree = Callable[[], AbstractContextManager[None]]
Reserve = Callable[..., AbstractContextManager[hp.Reservation]]
Run = Callable[..., subprocess.CompletedProcess[str]]

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="reserving huge pages needs root")


def _no_core() -> None:
    # SIGQUIT's default action (before Python starts) dumps core: not into the checkout.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "uffdctl", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, preexec_fn=_no_core,
                            env={**os.environ, "NO_COLOR": "1"})


def _records(pid: int) -> list[dict[str, Any]]:
    out = []
    for path in glob.glob(f"{hp.RECORD_DIR}/{pid}-*.json"):
        try:
            with open(path) as f:
                out.append({**json.load(f), "path": path})
        except FileNotFoundError:
            pass  # given back and removed since the listing
    return out


def _wait_for_record(proc: subprocess.Popen[str], state: str = "held") -> dict[str, Any]:
    """The child's reservation record once it is in ``state`` (the pool grown)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        recs = [r for r in _records(proc.pid) if r["state"] == state]
        if recs:
            return recs[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("the demo never recorded a reservation")


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name


def _startup() -> float:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "uffdctl", "--version"], capture_output=True,
                   check=True, cwd=ROOT)
    return time.monotonic() - t0


# ----- catchable signals: given back like Ctrl-C ------------------------------------------------

CATCHABLE = [signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]


@pytest.mark.parametrize("signum", CATCHABLE, ids=_signal_name)
def test_signal_mid_run_gives_back_and_exits_128_plus_signum(no_free_hugepages: NoFree,
                                                             signum: int) -> None:
    """The signal lands while the demo holds its reserved pages (it is stuck in a fault on
    purpose, --stall): exit 128 + signum, one line, the pool as before, no record left."""
    with no_free_hugepages():
        before = pool_state()
        proc = _start("demo", "minor", "--stall", "--timeout", "60", "--json")
        rec = _wait_for_record(proc)
        # 16 claimed; 8 once the registered area is mapped (the kernel holds those).
        assert (rec["pid"], rec["added"], rec["claimed"] in (16, 8)) == (proc.pid, 16, True)
        assert pool_state()[0] == before[0] + 16  # really reserved
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
        after = pool_state()
    assert proc.returncode == 128 + signum == {"SIGTERM": 143, "SIGHUP": 129,
                                               "SIGQUIT": 131}[_signal_name(signum)], err
    assert err.strip().splitlines() == [f"uffdctl: terminated by {_signal_name(signum)}"]
    assert after == before
    assert _records(proc.pid) == []
    assert lines(out)  # every line written before the end is whole JSON


def _signal_at_random_moment(args: list[str], signum: int, rng: random.Random, events: int,
                             startup: float) -> tuple[subprocess.Popen[str], str, str]:
    """Start `uffdctl ARGS`, wait for a random number of its output lines (0: a random
    moment of start-up) and a random fraction of a millisecond more, send the signal."""
    proc = _start(*args)
    assert proc.stdout is not None
    wait_for = rng.randrange(events)
    seen: list[str] = []
    if not wait_for:
        time.sleep(rng.uniform(0, startup))
    while len(seen) < wait_for:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
    time.sleep(rng.uniform(0, 0.001))
    proc.send_signal(signum)
    # Not communicate(): it reads the pipes' descriptors and would miss what readline()
    # already buffered.  stderr is at most a line or two: it cannot fill its pipe meanwhile.
    out = proc.stdout.read()
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(timeout=60)
    return proc, "".join(seen) + out, err


@pytest.mark.parametrize("signum", CATCHABLE, ids=_signal_name)
def test_signal_at_random_moments_gives_back(no_free_hugepages: NoFree, signum: int) -> None:
    """A real signal at random moments of a real run (start-up, reserving, faulting, giving
    back, exiting): the run ends with 128 + signum and one line, or (the signal arriving
    before Python started, or after the run was over) as Python or a finished run ends; the
    pool is always as before and no record is left."""
    rng = random.Random(1000 + signum)
    startup = _startup()
    args = ["demo", "minor", "--pages", "16", "--threads", "2", "--json"]
    endings = []
    with no_free_hugepages():
        before = pool_state()
        proc = _start(*args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and summary(out)["ok"], err
        events = len(out.splitlines())  # the moments to choose from: after each line
        for _ in range(10):
            proc, out, err = _signal_at_random_moment(args, signum, rng, events, startup)
            endings.append(proc.returncode)
            if proc.returncode == -signum:
                # The default action: only before run() holds the signals back, when
                # nothing of uffdctl's has run.
                assert out == "" and f"{ROOT}/uffdctl/" not in err, err
            elif proc.returncode == 0:
                assert summary(out)["ok"], err  # it arrived after the run was over
            else:
                assert proc.returncode == 128 + signum, err
                assert err.strip().splitlines() == [
                    f"uffdctl: terminated by {_signal_name(signum)}"], err
            assert "Traceback" not in err and "internal error" not in err, err
            assert pool_state() == before, f"signal {signum} after the run ended {endings}"
            assert _records(proc.pid) == []
    assert endings.count(128 + signum) >= 5, endings  # most of them landed mid-run


@pytest.mark.parametrize("color", [True, False], ids=["live-view", "plain"])
def test_terminal_hang_up_gives_back_and_exits_129(no_free_hugepages: NoFree,
                                                   color: bool) -> None:
    """The real SIGHUP: the demo runs on a terminal (a pty, as over ssh) that goes away while
    it holds its pages.  The kernel sends SIGHUP; the run gives everything back and exits 129
    (its last line has nowhere to go and is dropped, not a traceback)."""
    import pty

    with no_free_hugepages():
        before = pool_state()
        pid, master = pty.fork()
        if pid == 0:  # the child: session leader, the pty its controlling terminal
            env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
            if not color:
                env["NO_COLOR"] = "1"
            _no_core()
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, "-m", "uffdctl", "demo", "minor",
                                       "--stall", "--timeout", "60"], env)
        try:
            deadline = time.monotonic() + 60
            seen = b""
            while not [r for r in _records(pid) if r["state"] == "held"]:
                assert time.monotonic() < deadline, seen
                if select.select([master], [], [], 0.05)[0]:
                    seen += os.read(master, 65536)  # the terminal must be read, or it fills
            assert pool_state()[0] == before[0] + 16
        finally:
            os.close(master)  # hang up
            _, status = os.waitpid(pid, 0)
        after = pool_state()
    assert os.waitstatus_to_exitcode(status) == 129
    assert after == before
    assert _records(pid) == []


# ----- SIGKILL: the record stays, the next run gives back ----------------------------------------

def _killed_then(next_run: list[str], run_cli: Run) -> tuple[int, dict[str, Any], Any] | None:
    """SIGKILL a demo that holds 16 reserved pages, check its record stayed, run NEXT_RUN.
    (pid, record, result); None when another uffdctl run as root on this machine gave the
    pages back before NEXT_RUN could (on a shared machine only: try again)."""
    before = pool_state()
    proc = _start("demo", "minor", "--stall", "--timeout", "60", "--json")
    rec = _wait_for_record(proc)
    with hp.exclusive():  # no other uffdctl run gives them back while they are checked
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        # The leak the record is for: the pages are still in the pool, the record says so.
        assert pool_state()[0] == before[0] + 16
        (left,) = _records(proc.pid)
    assert {k: left[k] for k in ("version", "pid", "size_kb", "added", "state")} == {
        "version": 1, "pid": proc.pid, "size_kb": 2048, "added": 16, "state": "held"}
    assert left["claimed"] in (16, 8)  # 8: the registered area was mapped
    assert left["start_time"] == rec["start_time"] > 0
    assert left["pool"] == "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    res = run_cli(*next_run)
    assert res.returncode == 0, res.stderr
    assert pool_state() == before
    assert _records(proc.pid) == []
    gave = f"gave back 16 2048 kB huge pages that uffdctl pid {proc.pid} reserved and never " \
        "gave back (it was killed)"
    if next_run[0] == "demo":
        assert summary(res.stdout)["ok"]
        found = gave in [e.get("text", "") for e in lines(res.stdout)]
    else:
        found = bool(json.loads(res.stdout)["hugepages"]["leftover"])
    return (proc.pid, left, res) if found else None


@pytest.mark.parametrize("next_run", [["demo", "minor", "--pages", "2", "--json"],
                                      ["probe", "--json"]], ids=["demo", "probe"])
def test_sigkill_leaves_a_record_that_the_next_run_gives_back(no_free_hugepages: NoFree,
                                                              run_cli: Run, next_run: list[str]
                                                              ) -> None:
    with no_free_hugepages():
        try:
            for _ in range(3):
                done = _killed_then(next_run, run_cli)
                if done:
                    break
            else:
                pytest.fail("other uffdctl runs always gave the pages back first")
        finally:
            hp.recover()  # whatever happened above, nothing stays behind
    pid, left, res = done
    if next_run[0] == "probe":
        (found,) = json.loads(res.stdout)["hugepages"]["leftover"]
        assert found == {"pid": pid, "size_kb": 2048, "pages": 16, "given_back": 16,
                         "left": 0, "record": left["path"], "why": None, "fix": None}
        table = run_cli("probe")  # nothing left over any more: no line about it
        assert f"uffdctl pid {pid}" not in table.stdout


def test_sigkill_at_random_moments_next_run_restores_the_pool(no_free_hugepages: NoFree,
                                                              run_cli: Run) -> None:
    """SIGKILL anywhere: before the record, while the pool grows, while it is held, while it
    is given back; the next run leaves the pool as it was before the killed one."""
    rng = random.Random(99)
    startup = _startup()
    with no_free_hugepages():
        before = pool_state()
        try:
            for _ in range(8):
                proc = _start("demo", "minor", "--pages", "32", "--json")
                time.sleep(rng.uniform(startup * 0.5, startup + 0.6))
                proc.kill()
                proc.communicate(timeout=60)
                res = run_cli("demo", "minor", "--pages", "1", "--json")
                assert res.returncode == 0, res.stderr
                assert pool_state() == before
                # Neither a record nor a temporary file cut short by the kill.
                assert glob.glob(f"{hp.RECORD_DIR}/{proc.pid}-*") == []
        finally:
            hp.recover()


def test_sigkill_without_root_the_next_run_says_what_is_left_and_how(
        no_free_hugepages: NoFree, as_nobody: Run) -> None:
    """The next run cannot give the pages back (not root): `probe` names them, and the fix it
    prints, run as root, gives them back exactly."""
    with no_free_hugepages():
        before = pool_state()
        proc = _start("demo", "minor", "--stall", "--timeout", "60", "--json")
        try:
            rec = _wait_for_record(proc)
            # The lock keeps any other uffdctl run as root on this machine (which would give
            # the pages back itself) out until the fix has been run; unprivileged runs do not
            # take it.
            with hp.exclusive():
                proc.kill()
                proc.communicate(timeout=60)
                res = as_nobody("probe", "--json")
                assert res.returncode == 0, res.stderr
                (found,) = json.loads(res.stdout)["hugepages"]["leftover"]
                path = f"{hp.RECORD_DIR}/{proc.pid}-{rec['start_time']}-0.json"
                assert found == {
                    "pid": proc.pid, "size_kb": 2048, "pages": 16, "given_back": 0,
                    "left": 16, "record": path, "why": "not root",
                    "fix": f"as root: sysctl vm.nr_hugepages={before[0]} && rm {path}"}
                table = as_nobody("probe")
                assert f"uffdctl pid {proc.pid}" in table.stdout
                assert f"fix: as root: sysctl vm.nr_hugepages={before[0]} && rm {path}" in \
                    table.stdout
                assert pool_state()[0] == before[0] + 16 and _records(proc.pid)
                subprocess.run(["sh", "-c", found["fix"].removeprefix("as root: ")],
                               check=True, capture_output=True)
            after = pool_state()
        finally:
            hp.recover()
    assert after == before
    assert _records(proc.pid) == []


# ----- concurrent runs ------------------------------------------------------------------------

def _two_at_once(*args: str) -> list[tuple[subprocess.Popen[str], str, str]]:
    procs = [_start(*args), _start(*args)]
    return [(p, *p.communicate(timeout=120)) for p in procs]


def test_two_demos_on_a_pool_for_one_the_loser_exits_3_up_front(no_free_hugepages: NoFree,
                                                                hugepages: Reserve) -> None:
    """16 free pages, two `demo minor --no-reserve` (16 pages each) started at once: one runs
    and verifies, the other is refused before it maps anything, exit 3, one line that names
    the run holding the pages."""
    overlapped = False
    with no_free_hugepages(), hugepages(16):
        before = pool_state()
        for _ in range(5):  # until they really ran at the same time (almost always at once)
            runs = _two_at_once("demo", "minor", "--no-reserve", "--pages", "8", "--json")
            for proc, _out, err in runs:
                assert "internal error" not in err and "Traceback" not in err, err
                assert proc.returncode in (0, 3), err
            assert pool_state() == before
            if sorted(p.returncode for p, _, _ in runs) == [0, 0]:
                continue  # one was over before the other started: no contention
            (winner, w_out, _), = [r for r in runs if r[0].returncode == 0]
            (_loser, l_out, l_err), = [r for r in runs if r[0].returncode == 3]
            assert summary(w_out)["ok"] and summary(w_out)["reserved_pages"] == 0
            (line,) = l_err.strip().splitlines()
            # 16 free before the winner maps its first 8, 8 after: all of them its own; once
            # it has mapped them all, none is free and it is named as holding them.
            assert re.match(r"uffdctl: no free huge pages: 16 of 2048 kB needed, "
                            rf"((16|8) free, all claimed by running uffdctl pid {winner.pid}|"
                            rf"0 free; running uffdctl pid {winner.pid} holds 16) ",
                            line), line
            assert "or wait until the other run ends)" in line
            assert "(--no-reserve was given)" in line and "(fix: drop --no-reserve" in line
            # Refused up front: nothing mapped, registered, faulted or verified.
            *steps, last = lines(l_out)
            assert [e["name"] for e in steps] == ["opened"]
            assert (last["event"], last["ok"], last["exit_status"]) == ("summary", False, 3)
            overlapped = True
            break
    assert overlapped, "the two demos never ran at the same time"


def test_two_demos_as_root_each_get_their_own_pages(no_free_hugepages: NoFree,
                                                    hugepages: Reserve) -> None:
    """The original failure: 16 free pages, two root demos needing 16 each.  The one that
    comes second sees the first one's claim and reserves its own pages instead of taking
    the first one's (which then failed after verification with ENOMEM); both verify."""
    with no_free_hugepages(), hugepages(16):
        before = pool_state()
        for _ in range(5):
            runs = _two_at_once("demo", "minor", "--pages", "8", "--json")
            for proc, out, err in runs:
                assert proc.returncode == 0, err
                assert summary(out)["ok"]
            assert pool_state() == before
            reserved = sorted(summary(out)["reserved_pages"] for _, out, _ in runs)
            if reserved == [0, 0]:
                continue  # one after the other: both used the free pages
            # They overlapped: the second reserved its own, all 16, or fewer when it came
            # while the first was giving its pages back (hugetlbfs frees a file's pages one
            # at a time, and what is free then is free for it).
            assert reserved[0] == 0 and 0 < reserved[1] <= 16, reserved
            break
        else:
            pytest.fail("the two demos never ran at the same time")


# ----- advice that names the pool it means ------------------------------------------------------

def test_a_non_default_size_names_its_own_pool(run_cli: Run) -> None:
    """1 GiB pages are not vm.nr_hugepages (the default size's pool): the fix names the
    1 GiB pool's own file."""
    pool = hp.read_pools().pool(1 << 30)
    if pool is None or hp.default_size_kb() == 1 << 20:
        pytest.skip("no 1 GiB pool besides the default size")
    if hp.unclaimed(pool) >= 2:
        pytest.skip("1 GiB pages are free here")
    res = run_cli("demo", "minor", "--page-size", "1G", "--pages", "1", "--no-reserve")
    assert res.returncode == 3, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "2 of 1048576 kB needed" in line, line
    assert f"echo {pool.nr + 2} > /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages" \
        in line, line
    assert "vm.nr_hugepages" not in line, line


def test_hugetlbfs_mount_points_are_decoded(tmp_path: Any, run_cli: Run) -> None:
    """/proc/mounts writes a space as \\040 and a backslash as \\134: a real hugetlbfs mount
    at such a path is reported as the path it is."""
    where = tmp_path / "huge pages\\here"
    where.mkdir()
    subprocess.run(["mount", "-t", "hugetlbfs", "none", str(where)], check=True)
    try:
        with open("/proc/mounts") as f:
            assert "huge\\040pages\\134here" in f.read()
        assert str(where) in hp.read_pools().mounts
        res = run_cli("probe", "--json", "--no-ioctl-check")
        assert str(where) in json.loads(res.stdout)["hugepages"]["mounts"]
    finally:
        subprocess.run(["umount", str(where)], check=True)
