"""A real process for the inspect/ps tests: two userfaultfds with different features,
regions registered in every mode on anon, shmem and (with --hugetlb) hugetlb memory, an
unregistered alias of a registered memfd, and optionally one fault left unanswered.

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


def wait_until_stuck(tid: int, timeout: float = 30.0) -> None:
    """Until the thread sleeps in the fault, so that whoever reads our JSON line finds it
    stuck; exit with a message if it never gets there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/self/task/{tid}/wchan") as f:
            if f.read().strip() == STUCK_WCHAN:
                return
        time.sleep(0.001)
    sys.exit(f"uffd_holder: thread {tid} not in {STUCK_WCHAN} after {timeout:.0f} s")


def leave_a_fault(addr: int) -> dict[str, int]:
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
    wait_until_stuck(tid[0])
    return {"tid": tid[0], "address": addr}


class Holder:
    """The registered areas, kept mapped, and what the JSON line says about them."""

    def __init__(self) -> None:
        self.regions: list[dict[str, object]] = []
        self.keep: list[memtypes.Area] = []

    def region(self, name: str, memory: str, modes: str, u: uffd.Userfaultfd, pages: int = 2,
               alias: bool = False) -> memtypes.Area:
        area = memtypes.allocate(memory, pages)
        self.keep.append(area)
        if alias:
            memtypes.MEMORY_BY_NAME[memory].map_alias(area)
        u.register(area.addr, area.length, abi.mode_value(modes))
        self.regions.append({"name": name, "start": area.addr, "end": area.addr + area.length,
                             "modes": modes.split("+"), "memory": memory.split("-")[0],
                             "fd": u.fd})
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

    a = uffd.Userfaultfd.open()
    a.api(mask(FEATURES_A))
    b = uffd.Userfaultfd.open()
    b.api(mask(FEATURES_B))
    h = Holder()
    fault_area = h.region("anon-missing", "anon", "missing", a)
    h.region("anon-wp", "anon", "wp", b)
    h.region("anon-missing+wp", "anon", "missing+wp", a)
    h.region("shmem-missing", "shmem", "missing", a)
    minor = h.region("shmem-minor", "shmem", "minor", a, alias=True)
    h.region("shmem-wp", "shmem", "wp", b)
    if args.hugetlb:
        h.region("hugetlb-missing", "hugetlb", "missing", b, pages=1)
        h.region("hugetlb-minor", "hugetlb", "minor", b, pages=1)
        h.region("hugetlb-wp", "hugetlb", "wp", b, pages=1)
    fault = leave_a_fault(fault_area.addr) if args.fault else None
    print(json.dumps({"uffds": {"A": a.fd, "B": b.fd}, "regions": h.regions,
                      "alias": {"start": minor.alias, "end": minor.alias + minor.length},
                      "fault": fault}), flush=True)
    for line in sys.stdin:
        if line.strip() == "more":
            h.region("more", "anon", "missing", a)
            print(json.dumps(h.regions[-1]), flush=True)
        elif line.strip() == "exit":
            break


if __name__ == "__main__":
    main()
