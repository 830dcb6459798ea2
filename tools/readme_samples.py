"""Regenerate (or check) the output samples in README.md from real runs on this machine.

    python tools/readme_samples.py           rewrite the samples in README.md
    python tools/readme_samples.py --check   exit 1 when a sample no longer matches a run

A sample sits between ``<!-- sample: ARGS -->`` and ``<!-- /sample -->``; ARGS are uffdctl's
arguments, where ``{holder}`` is the pid of tests/helpers/uffd_holder.py (started here, with
one fault left unanswered) and ``{vmm}`` and ``{handler}`` those of tests/helpers/
uffd_layouts.py in Firecracker's layout (the handler in another process, reading the fault
and never answering it).  --check compares line shapes (numbers, addresses and bar lengths
vary from run to run; the words, the columns and the verdicts may not).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- sample: (.+?) -->\n```text\n)(.*?)(```\n<!-- /sample -->)", re.S)


def run(args: str, pids: dict[str, int]) -> str:
    argv = args.format(**pids).split()
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100"}
    res = subprocess.run([sys.executable, "-m", "uffdctl", *argv], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    if res.returncode != 0:
        sys.exit(f"readme_samples: `uffdctl {' '.join(argv)}` failed: {res.stderr.strip()}")
    return "\n".join(line.rstrip() for line in res.stdout.splitlines()) + "\n"


def shape(line: str) -> str:
    line = re.sub(r"0x[0-9a-f]+|\b[0-9a-f]*\d[0-9a-f]*\b", "0", line)
    line = re.sub(r"\d+", "0", line)
    line = re.sub(r"#+", "#", line)
    return re.sub(r"[\s|+-]+", " ", line).strip()


def main() -> int:
    check = "--check" in sys.argv[1:]
    holder = subprocess.Popen([sys.executable, "tests/helpers/uffd_holder.py", "--fault"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=ROOT)
    vmm = subprocess.Popen([sys.executable, "tests/helpers/uffd_layouts.py", "--layout",
                            "remote", "--handler", "reading"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    try:
        assert holder.stdout is not None and vmm.stdout is not None
        json.loads(holder.stdout.readline())
        layout = json.loads(vmm.stdout.readline())
        pids = {"holder": holder.pid, "vmm": vmm.pid, "handler": layout["handler"]["pid"]}
        text = README.read_text()
        stale = []

        def fill(m: re.Match[str]) -> str:
            fresh = run(m.group(2), pids)
            if check:
                have = {shape(line) for line in fresh.splitlines()}
                missing = [line for line in m.group(3).splitlines()
                           if "<=" not in line and not line.startswith("cmdline:")
                           and shape(line) not in have]
                if missing:
                    stale.append(f"uffdctl {m.group(2)}: {missing[:3]}")
                return m.group(0)
            return m.group(1) + fresh + m.group(4)

        new = BLOCK.sub(fill, text)
    finally:
        for p in (holder, vmm):
            try:
                os.killpg(p.pid, 9) if p is vmm else p.kill()
            except ProcessLookupError:
                pass
            p.wait()
    if check:
        for s in stale:
            print(f"stale README sample: {s}", file=sys.stderr)
        return 1 if stale else 0
    README.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
