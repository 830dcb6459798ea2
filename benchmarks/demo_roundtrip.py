"""Per-fault round trip of `uffdctl demo minor` (Python handler, Python touchers) against a
small C handler (benchmarks/c/minor_handler.c, compiled here at run time), same run.

Both map the same kind of pages (one memfd mapped twice, contents written through the plain
mapping, the other mapping registered MINOR), place handler and toucher the same way
(--cpus), resolve with UFFDIO_CONTINUE and time each first touch from the touching thread.
The no-uffd floor (the same touch on an unregistered mapping) is shown beside both.
Target: Python p50 <= 1.5x the C handler's p50 with --cpus same.

Usage: python benchmarks/demo_roundtrip.py [--pages N] [--rounds N] [--cpus same|spread]
       [--backing shmem|hugetlb]   (hugetlb needs free huge pages, or root to reserve them)
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from uffdctl import demo, hugepages, scenarios  # noqa: E402

TARGET = 1.5


def build() -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        sys.exit("demo_roundtrip: no C compiler (cc/gcc) to build the baseline")
    out = HERE / ".build" / "minor_handler"
    out.parent.mkdir(exist_ok=True)
    src = HERE / "c" / "minor_handler.c"
    subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(out), str(src)],
                   check=True)
    return out


def run_c(binary: Path, backing: str, pages: int, cpus: str) -> tuple[float, float]:
    res = subprocess.run([str(binary), backing, str(pages), cpus], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        sys.exit(f"demo_roundtrip: C handler failed: {res.stderr.strip()}")
    d = json.loads(res.stdout)
    return statistics.median(d["samples_ns"]), statistics.median(d["floor_ns"])


def run_python(backing: str, pages: int, cpus: str) -> tuple[float, float]:
    cfg = demo.DemoConfig(mode="minor", backing=backing, pages=pages, cpus=cpus,
                          reserve=False)
    events: list[object] = []
    s = scenarios.run(cfg, events.append)  # as --json does: every event is kept
    if not s.ok:
        sys.exit(f"demo_roundtrip: uffdctl demo failed: {s.error}")
    return statistics.median(s.latency_ns), statistics.median(s.floor_ns)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--cpus", choices=["same", "spread", "any"], default="same")
    ap.add_argument("--backing", choices=["shmem", "hugetlb"], default="shmem")
    args = ap.parse_args()
    binary = build()
    pages = args.pages if args.backing == "shmem" else min(args.pages, 32)

    def measure() -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        c, py = [], []
        for _ in range(args.rounds):  # interleaved, so drift hits both alike
            c.append(run_c(binary, args.backing, pages, args.cpus))
            py.append(run_python(args.backing, pages, args.cpus))
        return c, py

    if args.backing == "hugetlb":
        with hugepages.reserve(2 * pages):
            c, py = measure()
    else:
        c, py = measure()
    c_p50 = statistics.median(x for x, _ in c)
    py_p50 = statistics.median(x for x, _ in py)
    ratio = py_p50 / c_p50
    print(f"{args.backing}, {pages} pages, --cpus {args.cpus}, median of {args.rounds} rounds")
    print(f"  C handler       p50 {c_p50 / 1000:8.2f} us   floor p50 "
          f"{statistics.median(f for _, f in c) / 1000:6.2f} us (C toucher)")
    print(f"  uffdctl (Python) p50 {py_p50 / 1000:7.2f} us   floor p50 "
          f"{statistics.median(f for _, f in py) / 1000:6.2f} us (Python toucher)")
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"ratio Python/C: {ratio:.2f}x (target <= {TARGET}x): {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
