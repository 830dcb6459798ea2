"""A real process for the inspect/ps tests: two userfaultfds with different features,
regions registered in every mode the running kernel offers on anon, shmem and (with --hugetlb)
hugetlb memory, an unregistered alias of a registered memfd, and optionally one fault left
unanswered.

What it asks for follows the kernel in front of it: each descriptor requests only the features
UFFDIO_API offers, and a region whose mode needs features the kernel lacks (abi.MODE_SUPPORT:
minor before 5.13/5.14, wp on shmem/hugetlb before 5.19) is left out and listed under
"skipped", so the tests compare uffdctl with what really happened on every kernel.

Prints one JSON line describing exactly what it did (with --fault, once the faulting thread is
asleep in handle_userfault), then obeys stdin lines: "more" registers one more anonymous
MISSING region (and prints it), "exit" or EOF ends.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
import threading
import time

from uffdctl import abi, memtypes, uffd

FEATURES_A = ("missing_shmem", "minor_shmem", "thread_id")
FEATURES_B = ("missing_hugetlbfs", "minor_hugetlbfs", "wp_hugetlbfs_shmem")
PR_SET_NAME = 15  # include/uapi/linux/prctl.h
STUCK_WCHAN = "handle_userfault"  # /proc/PID/task/TID/wchan of a thread blocked in a fault


def mask(keys: tuple[str, ...]) -> int:
    m = 0
    for k in keys:
        m |= abi.FEATURE_BY_KEY[k].mask
    return m


def offered() -> int:
    """The features this kernel offers (UFFDIO_API asked for none)."""
    with uffd.Userfaultfd.open() as u:
        return u.api(0)[0]


def feature_names(features: int) -> list[str]:
    """Names in the order uffdctl lists them (abi.FEATURES)."""
    return [f.key for f in abi.FEATURES if features & f.mask]


def _stuck_by_proc(tid: int) -> bool | None:
    """Whether /proc says the thread sleeps in handle_userfault: wchan, or where wchan reads 0
    (x86-64 before 5.16 with the ORC unwinder) the kernel stack; None when neither says."""
    base = f"/proc/self/task/{tid}"
    with open(f"{base}/wchan") as f:
        wchan = f.read().strip()
    if wchan == STUCK_WCHAN:
        return True
    if wchan != "0":
        return False
    try:
        with open(f"{base}/stack") as f:
            return f"] {STUCK_WCHAN}+" in f.read()
    except OSError:
        return None  # not root: the stack is root's only


def _pending(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("pending:"):
                return int(line.split()[1])
    return 0


def wait_until_stuck(tid: int, fd: int, timeout: float = 30.0) -> None:
    """Until the thread sleeps in the fault, so that whoever reads our JSON line finds it
    stuck; exit with a message if it never gets there.  Where /proc cannot say where the
    thread sleeps, the fault queued on the descriptor and the thread asleep stand in."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stuck = _stuck_by_proc(tid)
        if stuck:
            return
        if stuck is None and _pending(fd):
            with open(f"/proc/self/task/{tid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("S", "D"):
                    time.sleep(0.2)  # queued and asleep: past schedule() by now
                    return
        time.sleep(0.001)
    sys.exit(f"uffd_holder: thread {tid} not in {STUCK_WCHAN} after {timeout:.0f} s")


def leave_a_fault(addr: int, fd: int) -> dict[str, int]:
    """A thread named "stuck" reads ``addr`` and blocks there: nobody answers."""
    started = threading.Event()
    tid: list[int] = []

    def toucher() -> None:
        ctypes.CDLL(None).prctl(PR_SET_NAME, b"stuck", 0, 0, 0)  # its name in /proc
        tid.append(threading.get_native_id())
        started.set()
        uffd.touch_read(addr)
    threading.Thread(target=toucher, daemon=True, name="stuck").start()
    started.wait()
    wait_until_stuck(tid[0], fd)
    return {"tid": tid[0], "address": addr}


class Holder:
    """The registered areas, kept mapped, and what the JSON line says about them."""

    def __init__(self, offered: int) -> None:
        self.offered = offered
        self.regions: list[dict[str, object]] = []
        self.skipped: list[dict[str, object]] = []
        self.keep: list[memtypes.Area] = []

    def region(self, name: str, memory: str, modes: str, u: uffd.Userfaultfd, pages: int = 2,
               alias: bool = False) -> memtypes.Area | None:
        kind = memory.split("-")[0]
        needs = abi.features_for(modes, kind)
        lacking = [k for k in needs if not self.offered & abi.FEATURE_BY_KEY[k].mask]
        if lacking:
            self.skipped.append({"name": name, "lacking": lacking})
            return None
        area = memtypes.allocate(memory, pages)
        self.keep.append(area)
        if alias:
            memtypes.MEMORY_BY_NAME[memory].map_alias(area)
        u.register(area.addr, area.length, abi.mode_value(modes))
        self.regions.append({"name": name, "start": area.addr, "end": area.addr + area.length,
                             "modes": modes.split("+"), "memory": kind, "fd": u.fd})
        return area


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hugetlb", action="store_true")
    ap.add_argument("--fault", action="store_true", help="leave one fault unanswered")
    ap.add_argument("--name", default=None, help="set the process name (comm)")
    args = ap.parse_args()
    if args.name is not None:
        libc = ctypes.CDLL(None)
        libc.prctl(PR_SET_NAME, args.name.encode("utf-8", "surrogateescape"), 0, 0, 0)

    have = offered()
    a = uffd.Userfaultfd.open()
    a.api(mask(FEATURES_A) & have)
    b = uffd.Userfaultfd.open()
    b.api(mask(FEATURES_B) & have)
    h = Holder(have)
    fault_area = h.region("anon-missing", "anon", "missing", a)
    assert fault_area is not None  # every kernel with userfaultfd does this
    h.region("anon-wp", "anon", "wp", b)
    h.region("anon-missing+wp", "anon", "missing+wp", a)
    h.region("shmem-missing", "shmem", "missing", a)
    # The alias is of a registered memfd: minor where the kernel has it, else missing.
    aliased = (h.region("shmem-minor", "shmem", "minor", a, alias=True)
               or h.region("shmem-missing-aliased", "shmem", "missing", a, alias=True))
    assert aliased is not None and aliased.alias
    h.region("shmem-wp", "shmem", "wp", b)
    if args.hugetlb:
        h.region("hugetlb-missing", "hugetlb", "missing", b, pages=1)
        h.region("hugetlb-minor", "hugetlb", "minor", b, pages=1)
        h.region("hugetlb-wp", "hugetlb", "wp", b, pages=1)
    fault = leave_a_fault(fault_area.addr, a.fd) if args.fault else None
    print(json.dumps({"uffds": {"A": a.fd, "B": b.fd},
                      "features": {"A": feature_names(a.features & mask(FEATURES_A)),
                                   "B": feature_names(b.features & mask(FEATURES_B))},
                      "offered": have, "regions": h.regions, "skipped": h.skipped,
                      "alias": {"start": aliased.alias, "end": aliased.alias + aliased.length},
                      "fault": fault}), flush=True)
    for line in sys.stdin:
        if line.strip() == "more":
            h.region("more", "anon", "missing", a)
            print(json.dumps(h.regions[-1]), flush=True)
        elif line.strip() == "exit":
            break


if __name__ == "__main__":
    main()
