"""`uffdctl inspect --json` on a process with N mappings of which K are registered, as a
ratio to `cat /proc/PID/smaps`, and `uffdctl ps --json` on the same host as a ratio to `lsfd`
plus `cat` of every holder's smaps: each pair in the same run.

Targets (issue 17): inspect --json <= 1.5x cat at every share registered (0, 1,000, 16,000,
65,000 of 65,000 mappings by default), ps --json <= 1.5x (lsfd + cat of every holder's
smaps).  The kernel's own cost of producing smaps dominates; the parser must add little, even
when every region is registered.  The two commands of a pair run in turn, the order swapped
every round, and the quoted ratio is the median of the rounds' ratios (the machine's speed
drifts less within a pair than across a run).  uffdctl is measured installed, as users run
it (see startup.py); --uffdctl names another installed one (an older commit, to compare).

--full also runs the earlier checks on the last share: the table against cat, and
`inspect --all` (every region, flags decoded) as a table against the same as JSON, each run's
CPU time (user + system, from wait4: what the command costs, whatever else the machine runs)
and peak RSS: target table <= 2x JSON and under 100 MB, piped and on a terminal (a pty, where
rich draws styles).  Before the table was streamed it took 18x and 630 MB.
--all-only runs only that part.

--psutil N instead compares, with N extra `sleep` processes, the /proc reading uffdctl does by
hand with psutil's equivalents, in this interpreter (which needs psutil): the numbers in
uffdctl/procfs.py come from it.
Opening a userfaultfd needs root unless vm.unprivileged_userfaultfd=1.
Usage: python benchmarks/inspect_bench.py [--mappings N] [--registered K ...] [--runs N]
       [--full | --all-only] [--uffdctl PATH] [--psutil N]
"""

from __future__ import annotations

import argparse
import os
import pty
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from startup import installed, median_seconds  # noqa: E402

# A process with N one-page anonymous mappings that cannot merge (alternating protections),
# K of them spread evenly registered MISSING with one userfaultfd (a run of neighbours in one
# UFFDIO_REGISTER, which registers each mapping it covers), waiting on stdin.
MANY_MAPPINGS = r"""
import ctypes, os, sys
from uffdctl import abi, uffd
libc = ctypes.CDLL(None, use_errno=True)
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
n, k = int(sys.argv[1]), int(sys.argv[2])
u = uffd.Userfaultfd.open(); u.api(0)
base = uffd.mmap(n * 4096, 0, uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS | uffd.MAP_NORESERVE)
for i in range(n):
    prot = uffd.PROT_READ if i % 2 else uffd.PROT_READ | uffd.PROT_WRITE
    if libc.mprotect(base + i * 4096, 4096, prot):
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()), "mprotect")
chosen = sorted({j * n // k for j in range(k)}) if k else []
first = last = None
for i in chosen + [None]:
    if last is not None and i == last:
        last += 1
        continue
    if first is not None:
        u.register(base + first * 4096, (last - first) * 4096, abi.mode_value("missing"))
    first, last = i, None if i is None else i + 1
print("ready", flush=True)
sys.stdin.read()
"""

TARGET = 1.5  # inspect --json / cat, ps --json / (lsfd + cat of the holders' smaps)
SHARES = (0, 1_000, 16_000, 65_000)


def verdict(name: str, ours: float, base: float, target: float) -> bool:
    ratio = ours / base
    ok = ratio <= target
    print(f"{name}: {ours * 1e3:.0f} ms vs {base * 1e3:.0f} ms = {ratio:.2f}x "
          f"(target <= {target}x): {'PASS' if ok else 'FAIL'}")
    return ok


ALL_RATIO, ALL_MB = 2.0, 100  # inspect --all: table <= 2x the JSON, under 100 MB


def child_costs(cmd: list[str], terminal: bool = False) -> tuple[float, float, float]:
    """(wall s, CPU s (user + system), peak RSS MB) of one run of ``cmd``, its output thrown
    away, or read from a pty as a terminal would (COLUMNS=200, colour allowed)."""
    t0 = time.perf_counter()
    if terminal:
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.pop("NO_COLOR", None)
            os.environ["COLUMNS"] = "200"
            os.execv(cmd[0], cmd)
        while True:
            try:
                if not os.read(fd, 1 << 16):
                    break
            except OSError:  # EIO: the child closed its side
                break
        os.close(fd)
    else:
        pid = os.fork()
        if pid == 0:
            try:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
                os.execv(cmd[0], cmd)
            finally:
                os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: status {status}")
    return time.perf_counter() - t0, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def inspect_all(uffdctl: str, pid: str, runs: int) -> bool:
    """`inspect --all PID` as a table (piped, then on a pty) against `inspect --all --json`:
    median CPU time ratio, largest peak RSS; PASS or NOT MET for each."""
    def costs(args: list[str], terminal: bool = False) -> tuple[float, float, float]:
        got = [child_costs([uffdctl, "inspect", *args, pid], terminal) for _ in range(runs)]
        return (statistics.median(g[0] for g in got), statistics.median(g[1] for g in got),
                max(g[2] for g in got))

    wall, cpu, peak = costs(["--all", "--json"])
    print(f"inspect --all --json: {cpu:.2f} s CPU ({wall:.2f} s wall), peak RSS {peak:.0f} MB")
    ok = True
    for label, terminal in (("table, piped", False), ("table, on a pty", True)):
        t_wall, t_cpu, t_peak = costs(["--all"], terminal)
        met = t_cpu / cpu <= ALL_RATIO and t_peak < ALL_MB
        ok &= met
        print(f"inspect --all {label}: {t_cpu:.2f} s CPU ({t_wall:.2f} s wall) = "
              f"{t_cpu / cpu:.2f}x the JSON (target <= {ALL_RATIO:g}x), peak RSS {t_peak:.0f} MB "
              f"(target < {ALL_MB} MB): {'PASS' if met else 'NOT MET'}")
    return ok


def _median_ms(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _import_ms(module: str, runs: int) -> float:
    """Cumulative import time of ``module`` once uffdctl's own /proc modules are loaded."""
    found = []
    for _ in range(runs):
        res = subprocess.run([sys.executable, "-X", "importtime", "-c",
                              f"import uffdctl.procs; import {module}"],
                             capture_output=True, text=True, check=True, cwd="/")
        m = re.search(rf"\|\s*(\d+) \| {re.escape(module)}$", res.stderr, re.MULTILINE)
        if m:
            found.append(int(m.group(1)) / 1e3)
    return statistics.median(found)


Pair = tuple[str, Callable[[], object] | None, Callable[[], object]]


def _fd_scan(pids: Callable[[], list[int]]) -> Callable[[], int]:
    """What `uffdctl ps` does for every process: does one of its fds link to a userfaultfd?"""
    from uffdctl.fdinfo import is_userfaultfd, list_fds

    def scan() -> int:
        hits = 0
        for pid in pids():
            try:
                hits += any(is_userfaultfd(link) for _, link in list_fds(pid))
            except OSError:
                pass
        return hits
    return scan


def _each(pids: list[int], fn: Callable[[int], object], errors: type[Exception]
          ) -> Callable[[], None]:
    def run() -> None:
        for pid in pids:
            try:
                fn(pid)
            except errors:
                pass
    return run


def _psutil_pairs(psutil: Any, pids: list[int]) -> list[Pair]:
    """(what, uffdctl's way, psutil's way) for each /proc read both could do."""
    from uffdctl import procfs

    def fresh_iter() -> list[int]:
        # A `uffdctl ps` starts with process_iter()'s cache of Process objects empty: each
        # new one reads /proc/PID/stat for its identity (create time).
        psutil.process_iter.cache_clear()
        return [p.pid for p in psutil.process_iter()]

    def open_files() -> None:
        psutil.process_iter.cache_clear()
        for p in psutil.process_iter():
            try:
                p.open_files()
            except psutil.Error:
                pass

    def state(pid: int) -> None:
        p = psutil.Process(pid)
        with p.oneshot():
            p.status(), p.name()

    return [
        ("ps: every pid's fd links",
         _fd_scan(lambda: sorted(int(n) for n in os.listdir("/proc") if n.isdigit())),
         _fd_scan(fresh_iter)),
        ("ps: psutil open_files() (no anon_inode links)", None, open_files),
        ("state and comm of every pid",
         _each(pids, lambda pid: procfs.parse_stat(procfs.read_text(f"/proc/{pid}/stat")),
               OSError),
         _each(pids, state, psutil.Error)),
        ("owner uid of every pid",
         _each(pids, lambda pid: os.stat(f"/proc/{pid}").st_uid, OSError),
         _each(pids, lambda pid: psutil.Process(pid).uids(), psutil.Error)),
        ("thread ids of every pid",
         _each(pids, lambda pid: os.listdir(f"/proc/{pid}/task"), OSError),
         _each(pids, lambda pid: psutil.Process(pid).threads(), psutil.Error)),
    ]


def compare_psutil(extra: int, runs: int) -> None:
    """uffdctl's hand-written /proc reads against psutil's, each pair on the same processes."""
    try:
        import psutil
    except ImportError:
        print("psutil not installed in this interpreter: nothing to compare")
        return
    sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(extra)]
    try:
        pids = sorted(int(n) for n in os.listdir("/proc") if n.isdigit())
        print(f"{len(pids)} processes ({extra} sleep), psutil {psutil.__version__}, "
              f"median of {runs} (ms):")
        for name, hand, other in _psutil_pairs(psutil, pids):
            mine = f"{_median_ms(hand, runs):7.1f}" if hand else "      -"
            print(f"  {name:48s} hand {mine}   psutil {_median_ms(other, runs):7.1f}")
    finally:
        for p in sleepers:
            p.kill()
        for p in sleepers:
            p.wait()
    print(f"  import psutil after uffdctl.procs: {_import_ms('psutil', 21):.1f} ms "
          "(python -X importtime, median of 21)")


def paired(ours: list[str], base: list[str], runs: int) -> tuple[float, float, float]:
    """(median s of ours, median s of base, median of the per-round ratios), the two run in
    turn, which goes first swapped every round, every output thrown away."""
    def once(cmd: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, cwd="/")
        return time.perf_counter() - t0

    once(ours), once(base)  # warm the page cache and the byte code
    a, b = [], []
    for k in range(runs):
        if k % 2:
            b.append(once(base))
            a.append(once(ours))
        else:
            a.append(once(ours))
            b.append(once(base))
    return (statistics.median(a), statistics.median(b),
            statistics.median(x / y for x, y in zip(a, b, strict=True)))


def paired_verdict(name: str, base_name: str, got: tuple[float, float, float]) -> bool:
    ours, base, ratio = got
    ok = ratio <= TARGET
    print(f"  {name}: {ours * 1e3:.0f} ms, {base_name} {base * 1e3:.0f} ms: {ratio:.2f}x "
          f"(target <= {TARGET}x): {'PASS' if ok else 'FAIL'}")
    return ok


def holders() -> list[int]:
    """The pids holding a userfaultfd (a link anon_inode:[userfaultfd] in /proc/PID/fd)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{name}/fd")
            if any(os.readlink(f"/proc/{name}/fd/{fd}") == "anon_inode:[userfaultfd]"
                   for fd in fds):
                found.append(int(name))
        except OSError:
            continue
    return sorted(found)


def start_holder(mappings: int, registered: int) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", MANY_MAPPINGS, str(mappings),
                               str(registered)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    assert holder.stdout is not None
    if holder.stdout.readline() != "ready\n":
        holder.kill()
        raise SystemExit(f"the holder of {mappings} mappings ({registered} registered) failed")
    return holder


def share(uffdctl: str, mappings: int, registered: int, runs: int) -> bool:
    """inspect --json against cat, ps --json against lsfd + cat of the holders' smaps, on a
    process with ``mappings`` mappings, ``registered`` of them registered."""
    holder = start_holder(mappings, registered)
    try:
        pid = str(holder.pid)
        with open(f"/proc/{pid}/maps") as f:
            count = sum(1 for _ in f)
        with open(f"/proc/{pid}/smaps", "rb") as f:
            flagged = sum(1 for line in f if line.startswith(b"VmFlags:")
                          and b" um " in line)
        print(f"process {pid}: {count} mappings, {flagged} registered "
              f"(asked {registered} of {mappings})")
        ok = paired_verdict("inspect --json", "cat smaps", paired(
            [uffdctl, "inspect", "--json", pid], ["cat", f"/proc/{pid}/smaps"], runs))
        lsfd = shutil.which("lsfd")
        if lsfd is None:
            print("  ps --json: lsfd not found (util-linux), no baseline: skipped")
            return ok
        held = holders()
        script = f"exec >/dev/null; {lsfd}; cat " + " ".join(f"/proc/{p}/smaps" for p in held)
        ok &= paired_verdict("ps --json", f"lsfd + cat of {len(held)} holders' smaps",
                             paired([uffdctl, "ps", "--json"], ["sh", "-c", script], runs))
        return ok
    finally:
        holder.kill()
        holder.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    with open("/proc/sys/vm/max_map_count") as f:
        limit = int(f.read())
    ap.add_argument("--mappings", type=int, default=min(65_000, limit - 400))
    ap.add_argument("--registered", type=int, nargs="+", default=None, metavar="K",
                    help="how many of the mappings are registered, one run each "
                         "(default: 0 1000 16000 65000, at most --mappings)")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--uffdctl", default=None, metavar="PATH",
                    help="time this uffdctl instead of this tree installed into .build/venv")
    ap.add_argument("--full", action="store_true",
                    help="also the table and inspect --all, on the last share")
    ap.add_argument("--psutil", type=int, default=None, metavar="N",
                    help="compare the /proc reading with psutil's on N extra processes")
    ap.add_argument("--all-only", action="store_true",
                    help="only inspect --all: table against JSON, CPU time and peak RSS")
    args = ap.parse_args()
    if args.psutil is not None:
        compare_psutil(args.psutil, max(args.runs, 9))
        return 0
    uffdctl = args.uffdctl or str(installed() / "uffdctl")
    shares = args.registered or sorted({min(k, args.mappings) for k in SHARES})
    if args.all_only:
        holder = start_holder(args.mappings, shares[-1])
        try:
            return 0 if inspect_all(uffdctl, str(holder.pid), max(1, min(args.runs, 3))) else 1
        finally:
            holder.kill()
            holder.wait()
    ok = True
    for k in shares:
        ok &= share(uffdctl, args.mappings, k, args.runs)
    if args.full:
        holder = start_holder(args.mappings, shares[-1])
        try:
            pid = str(holder.pid)
            cat = median_seconds(["cat", f"/proc/{pid}/smaps"], args.runs)
            ok &= verdict("inspect (table)",
                          median_seconds([uffdctl, "inspect", pid], args.runs), cat, TARGET)
            every = median_seconds([uffdctl, "inspect", "--all", "--json", pid], args.runs)
            print(f"inspect --all --json: {every * 1e3:.0f} ms = {every / cat:.2f}x "
                  "(no target: every field of every region is parsed)")
            ok &= inspect_all(uffdctl, pid, max(1, min(args.runs, 3)))
        finally:
            holder.kill()
            holder.wait()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
