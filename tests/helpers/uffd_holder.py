"""A real process for the inspect/ps tests: two userfaultfds with different features,
regions registered in every mode on anon, shmem and (with --hugetlb) hugetlb memory, an
unregistered alias of a registered memfd, and optionally one fault left unanswered.

Prints one JSON line describing exactly what it did, then obeys stdin lines:
"more" registers one more anonymous MISSING region (and prints it), "exit" or EOF ends.
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


def mask(keys: tuple[str, ...]) -> int:
    m = 0
    for k in keys:
        m |= abi.FEATURE_BY_KEY[k].mask
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hugetlb", action="store_true")
    ap.add_argument("--fault", action="store_true", help="leave one fault unanswered")
    ap.add_argument("--name", default=None, help="set the process name (comm)")
    args = ap.parse_args()
    if args.name is not None:
        libc = ctypes.CDLL(None)
        libc.prctl(15, args.name.encode("utf-8", "surrogateescape"), 0, 0, 0)  # PR_SET_NAME

    a = uffd.Userfaultfd.open()
    a.api(mask(FEATURES_A))
    b = uffd.Userfaultfd.open()
    b.api(mask(FEATURES_B))
    regions = []
    keep = []

    def region(name: str, memory: str, modes: str, u: uffd.Userfaultfd, pages: int = 2,
               alias: bool = False) -> memtypes.Area:
        area = memtypes.allocate(memory, pages)
        keep.append(area)
        if alias:
            memtypes.MEMORY_BY_NAME[memory].map_alias(area)
        u.register(area.addr, area.length, abi.mode_value(modes))
        regions.append({"name": name, "start": area.addr, "end": area.addr + area.length,
                        "modes": modes.split("+"), "memory": memory.split("-")[0],
                        "fd": u.fd})
        return area

    fault_area = region("anon-missing", "anon", "missing", a)
    region("anon-wp", "anon", "wp", b)
    region("anon-missing+wp", "anon", "missing+wp", a)
    region("shmem-missing", "shmem", "missing", a)
    minor = region("shmem-minor", "shmem", "minor", a, alias=True)
    region("shmem-wp", "shmem", "wp", b)
    if args.hugetlb:
        region("hugetlb-missing", "hugetlb", "missing", b, pages=1)
        region("hugetlb-minor", "hugetlb", "minor", b, pages=1)
        region("hugetlb-wp", "hugetlb", "wp", b, pages=1)
    fault = None
    if args.fault:
        tid = []

        def toucher() -> None:
            ctypes.CDLL(None).prctl(15, b"stuck", 0, 0, 0)  # the thread's name in /proc
            tid.append(threading.get_native_id())
            uffd.touch_read(fault_area.addr)  # blocks in the fault: nobody answers
        threading.Thread(target=toucher, daemon=True, name="stuck").start()
        while not tid:
            time.sleep(0.001)
        fault = {"tid": tid[0], "address": fault_area.addr}
    print(json.dumps({"uffds": {"A": a.fd, "B": b.fd}, "regions": regions,
                      "alias": {"start": minor.alias, "end": minor.alias + minor.length},
                      "fault": fault}), flush=True)
    for line in sys.stdin:
        if line.strip() == "more":
            region("more", "anon", "missing", a)
            print(json.dumps(regions[-1]), flush=True)
        elif line.strip() == "exit":
            break


if __name__ == "__main__":
    main()
