"""Start-up cost of `uffdctl probe --json` as a ratio to `python3 -c pass`, same run.

The JSON path must not import what only the tables need (rich): target <= 5x (issue 17).
Measured on the tool as users run it: installed (not editable) into a virtual environment
under benchmarks/.build/, with its byte code compiled at install time, as pip does.
Usage: python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET = 5.0
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / "benchmarks" / ".build" / "venv"


def installed() -> Path:
    """benchmarks/.build/venv with this tree installed; its bin directory.

    A source tree run with PYTHONDONTWRITEBYTECODE compiles every module on each start, and
    an editable install adds its import hook to every interpreter start: neither is what a
    user of `pip install uffdctl` pays."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                    str(ROOT)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(ROOT)], check=True,
                   stdout=subprocess.DEVNULL)
    return VENV / "bin"


def seconds(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    # cwd "/": `python -m uffdctl` run from the source tree would import that, not the
    # installed package.
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
                   cwd="/")
    return time.perf_counter() - t0


def median_seconds(cmd: list[str], runs: int) -> float:
    return statistics.median(seconds(cmd) for _ in range(runs))


def paired(cmd: list[str], baseline: list[str], runs: int) -> tuple[float, float, float]:
    """(median seconds of cmd, of the baseline, median of the pairs' ratios): the two run in
    turn, so that a drift of the machine's speed moves both sides of each ratio alike (a
    block of baseline runs then a block of cmd runs moved the ratio by 0.3x between runs)."""
    a, b = [], []
    for _ in range(runs):
        b.append(seconds(baseline))
        a.append(seconds(cmd))
    ratios = [x / y for x, y in zip(a, b, strict=True)]
    return statistics.median(a), statistics.median(b), statistics.median(ratios)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    bindir = installed()
    py = str(bindir / "python")
    baseline = [py, "-c", "pass"]
    for _ in range(3):  # warm the page cache for both
        seconds(baseline)
        seconds([str(bindir / "uffdctl"), "probe", "--json"])
    cases = {"uffdctl probe --json": [str(bindir / "uffdctl"), "probe", "--json"],
             "python -m uffdctl probe --json": [py, "-m", "uffdctl", "probe", "--json"],
             "uffdctl probe (tables)": [str(bindir / "uffdctl"), "probe"]}
    worst = 0.0
    for name, cmd in cases.items():
        t, base, ratio = paired(cmd, baseline, args.runs)
        if "--json" in name:
            worst = max(worst, ratio)
        print(f"{name}: {t * 1e3:.1f} ms, python -c pass {base * 1e3:.1f} ms: {ratio:.2f}x "
              f"(median of {args.runs} pairs' ratios)")
    verdict = "PASS" if worst <= TARGET else "FAIL"
    print(f"{verdict}: --json start-up {worst:.2f}x the baseline (target <= {TARGET}x)")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
