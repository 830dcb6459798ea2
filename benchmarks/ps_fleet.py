"""`uffdctl ps --json` on a fleet-like host as a ratio to `lsfd`, pair by pair in the same run.

The host of the issue: 2,000 processes holding 50 descriptors each (/dev/null, /dev/zero, a
regular file, pipes, UNIX socket pairs, eventfds), 200 of them holding a userfaultfd with one
anonymous page registered MISSING, 10 of those with a thread stuck in a fault on it that nobody
reads.  They are forked from one small C program (compiled at run time into .build/, about
0.2 MB a process) in a process group of its own, which is killed however the run ends (an
error, Ctrl-C, SIGTERM, SIGHUP; on SIGKILL each process dies with its parent, PR_SET_PDEATHSIG),
and the run checks that none is left.  Opening a userfaultfd needs root unless
vm.unprivileged_userfaultfd=1.

Before any timing, `uffdctl ps --json` must list exactly the 200 holders, the 10 stuck ones
among them, and nothing else of the fleet: the benchmark times the real job.

Each round runs `uffdctl ps --json` (installed into .build/venv, see startup.py), then each
baseline, every output to /dev/null: `lsfd` as it is (every descriptor, memory mapping and
namespace of every process), `lsfd -Q 'TYPE == "UNKN"'` (only the anonymous inodes, every
userfaultfd among them) and `lsfd -Q 'NAME == "anon_inode:[userfaultfd]"'` (ps's own question).
A filter saves lsfd the printing, not the reading.  Quoted: the median wall time of each, the
median of the per-round ratios, CPU time (user + system, from wait4) beside.
Target: ps <= 1x each lsfd.

--hold sets the fleet up, checks it, prints its process group and waits for Ctrl-C or SIGTERM:
time anything else against the same host meanwhile.
Usage: python benchmarks/ps_fleet.py [--processes N] [--fds N] [--holders N] [--stuck N]
       [--runs N] [--hold]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from inspect_bench import child_costs  # noqa: E402
from startup import installed  # noqa: E402

TARGET = 1.0
BUILD = HERE / ".build"

FLEET_C = r"""
/* PROCESSES children holding FDS descriptors each (0 to FDS-1); the first HOLDERS hold a
 * userfaultfd with one anonymous page registered MISSING, the first STUCK of those a thread
 * stuck in a fault on it.  Prints "ready PID..." once every child is set up, then waits to be
 * killed.  Each process dies with its parent (PR_SET_PDEATHSIG). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "uffd_fleet: %s: %s\n", what, strerror(errno));
    _exit(3);
}

static void *touch(void *page)
{
    return (void *)(long)*(volatile char *)page;  /* faults; nobody answers */
}

/* Open descriptors of assorted kinds until 0 to FDS-1 are all open. */
static void fill(int fds, const char *self)
{
    for (int kind = 0;; kind++) {
        int lowest = fcntl(0, F_DUPFD, 0), pair[2], fd = -1;
        if (lowest < 0)
            die("dup");
        close(lowest);
        if (lowest >= fds)
            return;
        int two = fds - lowest >= 2;
        switch (kind % 5) {
        case 0:
            fd = open(self, O_RDONLY);
            break;
        case 1:
            if (two) {
                if (pipe(pair))
                    die("pipe");
                continue;
            }
            /* fall through */
        case 2:
            if (two) {
                if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair))
                    die("socketpair");
                continue;
            }
            /* fall through */
        case 3:
            fd = eventfd(0, 0);
            break;
        default:
            fd = open("/dev/zero", O_RDONLY);
        }
        if (fd < 0)
            die("open");
    }
}

static void child(int i, int holders, int stuck, int fds, int ready, const char *self)
{
    int null = open("/dev/null", O_RDWR);
    if (null < 0 || dup2(null, 0) < 0 || dup2(null, 1) < 0)
        die("/dev/null");
    close(null);  /* stderr stays the driver's until the child is ready */
    if (i < holders) {
        int u = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (u < 0)
            die("userfaultfd (root, or vm.unprivileged_userfaultfd=1)");
        struct uffdio_api api = {.api = UFFD_API};
        if (ioctl(u, UFFDIO_API, &api))
            die("UFFDIO_API");
        long size = sysconf(_SC_PAGESIZE);
        char *page = mmap(NULL, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (page == MAP_FAILED)
            die("mmap");
        struct uffdio_register reg = {.range = {(unsigned long)page, size},
                                      .mode = UFFDIO_REGISTER_MODE_MISSING};
        if (ioctl(u, UFFDIO_REGISTER, &reg))
            die("UFFDIO_REGISTER");
        if (i < stuck) {
            pthread_attr_t attr;
            pthread_t t;
            pthread_attr_init(&attr);
            pthread_attr_setstacksize(&attr, 1 << 16);
            if (pthread_create(&t, &attr, touch, page))
                die("pthread_create");
            struct pollfd p = {.fd = u, .events = POLLIN};
            if (poll(&p, 1, 10000) != 1)  /* the fault is queued: the thread waits */
                die("poll");
        }
    }
    fill(fds, self);
    if (write(ready, "", 1) != 1)
        die("write");
    /* The ready pipe's end and stderr become /dev/null: FDS descriptors stay open. */
    null = open("/dev/null", O_RDONLY);
    if (null < 0 || dup2(null, ready) < 0 || dup2(null, 2) < 0)
        die("dup2");
    close(null);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: uffd_fleet PROCESSES FDS HOLDERS STUCK\n");
        return 2;
    }
    int n = atoi(argv[1]), fds = atoi(argv[2]), holders = atoi(argv[3]);
    int stuck = atoi(argv[4]), ready[2];
    pid_t driver = getppid(), me = getpid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != driver)
        return 3;  /* the driver went already */
    if (pipe(ready))
        die("pipe");
    pid_t *pids = calloc(n, sizeof *pids);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            die("fork");
        if (pids[i] == 0) {
            if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != me)
                _exit(3);
            close(ready[0]);
            child(i, holders, stuck, fds, ready[1], argv[0]);
        }
    }
    close(ready[1]);
    char buf[512];
    for (int got = 0; got < n;) {
        ssize_t r = read(ready[0], buf, sizeof buf);
        if (r <= 0)  /* every end closed before all were ready: one failed */
            die("a child failed");
        got += r;
    }
    close(ready[0]);
    printf("ready");
    for (int i = 0; i < n; i++)
        printf(" %d", pids[i]);
    printf("\n");
    fflush(stdout);
    for (;;)
        pause();
}
"""


def build() -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("ps_fleet: no C compiler (cc/gcc) to build the fleet")
    BUILD.mkdir(exist_ok=True)
    src, out = BUILD / "uffd_fleet.c", BUILD / "uffd_fleet"
    src.write_text(FLEET_C)
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(out), str(src)],
                   check=True)
    return out


class Fleet:
    """The fleet's processes, in a process group of their own (its id: the parent's pid)."""

    def __init__(self, binary: Path, processes: int, fds: int, holders: int, stuck: int
                 ) -> None:
        self.proc = subprocess.Popen([str(binary), str(processes), str(fds), str(holders),
                                      str(stuck)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.pgid = self.proc.pid
        self.pids: list[int] = []

    def wait_ready(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line.startswith("ready"):
            sys.exit(f"ps_fleet: the fleet did not come up (exit status {self.proc.poll()})")
        self.pids = [int(p) for p in line.split()[1:]]

    def members(self) -> list[int]:
        """Processes still in the fleet's group, zombies included."""
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat") as f:
                    text = f.read()
            except OSError:
                continue
            if int(text[text.rfind(")") + 2:].split()[2]) == self.pgid:
                out.append(int(name))
        return out

    def kill(self, timeout: float = 60.0) -> int:
        """Kill the whole group and wait until none of it is left (the orphans are reaped by
        init); the number still there after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.proc.returncode is None:
                self.proc.wait()
            left = self.members()
            if not left or time.monotonic() > deadline:
                return len(left)
            time.sleep(0.2)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def check(uffdctl: str, fleet: Fleet, holders: int, stuck: int) -> None:
    """`uffdctl ps --json` lists exactly the fleet's holders and its stuck ones."""
    res = subprocess.run([uffdctl, "ps", "--json"], capture_output=True, text=True, cwd="/",
                         check=False)
    if res.returncode != 0:
        sys.exit(f"ps_fleet: uffdctl ps --json failed ({res.returncode}): {res.stderr}")
    doc = json.loads(res.stdout)
    ours = set(fleet.pids)
    rows = [p for p in doc["processes"] if p["pid"] in ours]
    listed = sorted(p["pid"] for p in rows)
    stuck_rows = [p for p in rows if p["stuck_threads"]]
    assert listed == sorted(fleet.pids[:holders]), \
        f"ps lists {len(listed)} of the fleet, not its {holders} holders"
    assert sorted(p["pid"] for p in stuck_rows) == sorted(fleet.pids[:stuck]), \
        f"ps shows {len(stuck_rows)} stuck, not {stuck}"
    for p in rows:
        assert p["uffds"] == 1 and p["regions_by_mode"] == {"missing": 1}, p
    for p in stuck_rows:
        assert p["stuck_threads"] == 1 and p["pending"] == 1, p
    assert doc["scanned"] >= len(fleet.pids), doc["scanned"]
    print(f"uffdctl ps --json: {doc['scanned']} processes scanned, {len(rows)} of the fleet "
          f"listed ({len(doc['processes'])} in all), {len(stuck_rows)} with a stuck thread: "
          "as built")


def lsfd_count(lsfd: str, fleet: Fleet) -> int:
    res = subprocess.run([lsfd, "-n", "-o", "PID", "-Q", 'NAME == "anon_inode:[userfaultfd]"'],
                         capture_output=True, text=True, check=True)
    ours = set(fleet.pids)
    return sum(1 for line in res.stdout.split() if int(line) in ours)


def measure(cases: list[tuple[str, list[str]]], runs: int) -> dict[str, list[tuple[float, float]]]:
    """(wall s, CPU s) of each case, run in turn ``runs`` times after one round not counted."""
    got: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
    for round_ in range(runs + 1):
        for name, cmd in cases:
            wall, cpu, _ = child_costs(cmd)
            if round_:
                got[name].append((wall, cpu))
        print(f"  round {round_}/{runs}" + (" (warm-up)" if not round_ else ""),
              file=sys.stderr, flush=True)
    return got


def report(got: dict[str, list[tuple[float, float]]], ours: str) -> bool:
    a = got[ours]
    print(f"{ours}: {statistics.median(w for w, _ in a) * 1e3:.0f} ms wall, "
          f"{statistics.median(c for _, c in a) * 1e3:.0f} ms CPU (median of {len(a)})")
    ok = True
    for name, b in got.items():
        if name == ours:
            continue
        wall = statistics.median(x[0] / y[0] for x, y in zip(a, b, strict=True))
        cpu = statistics.median(x[1] / y[1] for x, y in zip(a, b, strict=True))
        met = wall <= TARGET
        ok &= met
        print(f"{name}: {statistics.median(w for w, _ in b) * 1e3:.0f} ms wall, "
              f"{statistics.median(c for _, c in b) * 1e3:.0f} ms CPU; ps / it = {wall:.2f}x "
              f"wall, {cpu:.2f}x CPU (median of the rounds' ratios; target <= {TARGET:g}x): "
              f"{'PASS' if met else 'FAIL'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2000)
    ap.add_argument("--fds", type=int, default=50, help="descriptors each process holds")
    ap.add_argument("--holders", type=int, default=200)
    ap.add_argument("--stuck", type=int, default=10)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--hold", action="store_true",
                    help="set up and check the fleet, then wait for Ctrl-C or SIGTERM")
    args = ap.parse_args()
    if not args.stuck <= args.holders <= args.processes or args.fds < 8:
        ap.error("need --stuck <= --holders <= --processes and --fds >= 8")
    lsfd = shutil.which("lsfd")
    if lsfd is None:
        sys.exit("ps_fleet: lsfd (util-linux) not found: no baseline")
    uffdctl = str(installed() / "uffdctl")
    binary = build()
    # SIGINT too: a shell starts a background job with it ignored, and the fleet must go.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    fleet = Fleet(binary, args.processes, args.fds, args.holders, args.stuck)
    ok = True
    try:
        fleet.wait_ready(120)
        print(f"fleet: {len(fleet.pids)} processes with {args.fds} descriptors each, "
              f"{args.holders} holding a userfaultfd (one anonymous page registered MISSING), "
              f"{args.stuck} of them with a thread stuck in a fault; process group {fleet.pgid}")
        check(uffdctl, fleet, args.holders, args.stuck)
        seen = lsfd_count(lsfd, fleet)
        assert seen == args.holders, f"lsfd sees {seen} userfaultfds in the fleet"
        print(f"lsfd sees the same {seen} userfaultfds")
        if args.hold:
            print("holding: Ctrl-C or SIGTERM ends it", flush=True)
            while True:
                signal.pause()
        cases = [("uffdctl ps --json", [uffdctl, "ps", "--json"]),
                 ("lsfd", [lsfd]),
                 ("lsfd -Q 'TYPE == \"UNKN\"'", [lsfd, "-Q", 'TYPE == "UNKN"']),
                 ("lsfd -Q 'NAME == \"anon_inode:[userfaultfd]\"'",
                  [lsfd, "-Q", 'NAME == "anon_inode:[userfaultfd]"'])]
        ok = report(measure(cases, args.runs), cases[0][0])
    except KeyboardInterrupt as exc:
        print(f"ps_fleet: interrupted ({exc})", file=sys.stderr)
        ok = args.hold  # holding ends so
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not stop the kill
        left = fleet.kill()
        print(f"fleet killed: {left} of its processes left" if left else
              "fleet killed: none of its processes left", file=sys.stderr)
        if left:
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
