"""`uffdctl inspect` on a process with ~65,000 mappings as a ratio to `cat /proc/PID/smaps`,
and `uffdctl ps` over every process as a ratio to `lsfd`, each pair in the same run.

Targets: inspect <= 1.5x cat (the kernel's own cost of producing smaps dominates; the parser
must add little), ps <= 1x lsfd.  uffdctl is measured installed, as users run it (see
startup.py).
Usage: python benchmarks/inspect_bench.py [--mappings N] [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from startup import installed, median_seconds  # noqa: E402

# A process with N one-page mappings that cannot merge (alternating protections), one in
# every 500 registered with a userfaultfd, waiting on stdin.
MANY_MAPPINGS = r"""
import sys
from uffdctl import abi, uffd
n = int(sys.argv[1])
u = uffd.Userfaultfd.open(); u.api(0)
base = uffd.mmap(n * 4096, 0, uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS | uffd.MAP_NORESERVE)
for i in range(n):
    prot = uffd.PROT_READ if i % 2 else uffd.PROT_READ | uffd.PROT_WRITE
    uffd.mprotect(base + i * 4096, 4096, prot)
    if i % 500 == 0 and prot & uffd.PROT_WRITE:
        u.register(base + i * 4096, 4096, abi.mode_value("missing"))
print("ready", flush=True)
sys.stdin.read()
"""


def verdict(name: str, ours: float, base: float, target: float) -> bool:
    ratio = ours / base
    ok = ratio <= target
    print(f"{name}: {ours * 1e3:.0f} ms vs {base * 1e3:.0f} ms = {ratio:.2f}x "
          f"(target <= {target}x): {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    with open("/proc/sys/vm/max_map_count") as f:
        limit = int(f.read())
    ap.add_argument("--mappings", type=int, default=min(65_000, limit - 400))
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    py = sys.executable
    bindir = installed()
    holder = subprocess.Popen([py, "-c", MANY_MAPPINGS, str(args.mappings)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=HERE.parent)
    ok = True
    try:
        assert holder.stdout is not None
        holder.stdout.readline()
        with open(f"/proc/{holder.pid}/maps") as f:
            count = sum(1 for _ in f)
        print(f"process {holder.pid} with {count} mappings")
        pid = str(holder.pid)
        uffdctl = [str(bindir / "uffdctl")]
        cat = median_seconds(["cat", f"/proc/{pid}/smaps"], args.runs)
        ok &= verdict("inspect --json",
                      median_seconds([*uffdctl, "inspect", "--json", pid], args.runs), cat, 1.5)
        ok &= verdict("inspect (table)",
                      median_seconds([*uffdctl, "inspect", pid], args.runs), cat, 1.5)
        every = median_seconds([*uffdctl, "inspect", "--all", "--json", pid], args.runs)
        print(f"inspect --all --json: {every * 1e3:.0f} ms = {every / cat:.2f}x "
              "(no target: every field of every region is parsed)")
    finally:
        holder.kill()
        holder.wait()
    lsfd = shutil.which("lsfd")
    if lsfd is None:
        print("ps: lsfd not found (util-linux), no baseline: skipped")
    else:
        base = median_seconds([lsfd], args.runs)
        for label, cmd in (("ps --json", ["ps", "--json"]), ("ps (table)", ["ps"])):
            ok &= verdict(label, median_seconds([str(bindir / "uffdctl"), *cmd], args.runs),
                          base, 1.0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
