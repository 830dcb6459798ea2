"""Start-up cost of `uffdctl probe --json` as a ratio to `python3 -c pass`, same run.

The JSON path must not import what only the tables need (rich): target <= 6x.
Usage: python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET = 6.0


def median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    py = sys.executable
    baseline = median_seconds([py, "-c", "pass"], args.runs)
    cases = {"python -m uffdctl probe --json": [py, "-m", "uffdctl", "probe", "--json"]}
    script = shutil.which("uffdctl", path=os.path.dirname(py))
    if script:
        cases["uffdctl probe --json"] = [script, "probe", "--json"]
    cases["python -m uffdctl probe (tables)"] = [py, "-m", "uffdctl", "probe"]
    print(f"baseline python -c pass: {baseline * 1e3:.1f} ms (median of {args.runs})")
    worst = 0.0
    for name, cmd in cases.items():
        t = median_seconds(cmd, args.runs)
        ratio = t / baseline
        if "--json" in name:
            worst = max(worst, ratio)
        print(f"{name}: {t * 1e3:.1f} ms = {ratio:.2f}x")
    verdict = "PASS" if worst <= TARGET else "FAIL"
    print(f"{verdict}: --json start-up {worst:.2f}x the baseline (target <= {TARGET}x)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
