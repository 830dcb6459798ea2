"""What the demo tests share: reading the JSON lines, Ctrl-C at chosen or random moments,
and the checks that nothing was left behind."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

from conftest import ROOT

from uffdctl import hugepages


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def summary(stdout: str) -> dict[str, Any]:
    events = lines(stdout)
    assert events[-1]["event"] == "summary"
    return events[-1]


def faults(stdout: str) -> list[dict[str, Any]]:
    return [e for e in lines(stdout) if e["event"] == "fault"]


def pool_state() -> tuple[int, int]:
    pool = hugepages.read_pools().pool()
    assert pool is not None
    return pool.nr, pool.free


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def maps() -> int:
    with open("/proc/self/maps") as f:
        return len(f.read().splitlines())


class Interrupt:
    """An emit callback that raises KeyboardInterrupt at the n-th event: Ctrl-C at that
    point (0: never)."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def __call__(self, _event: object) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def sigint_at_random_moments(args: list[str], runs: int, seed: int) -> None:
    """Run `uffdctl demo ARGS --json` and send SIGINT after a random delay, `runs` times:
    each run ends cleanly (0 or 130 with one line) and the huge page pool is as before."""
    rng = random.Random(seed)
    sigint_after(args, [rng.uniform(0.05, 0.5) for _ in range(runs)])


def sigint_after(args: list[str], delays: list[float]) -> None:
    """`uffdctl demo ARGS --json`, once per delay, with a SIGINT after that many seconds."""
    before = pool_state()
    for delay in delays:
        proc = subprocess.Popen([sys.executable, "-m", "uffdctl", "demo", *args, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=ROOT)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        if "Traceback" in err and not out:
            # Ctrl-C while the interpreter itself starts (site, runpy finding the package):
            # Python's own report, before a line of ours runs, so nothing of ours in it.
            assert f"{ROOT}/uffdctl/" not in err, err
        elif proc.returncode == -signal.SIGINT:
            # The default action, which Python has in place only before it starts and
            # after it has finished: either nothing ran or the whole run did.
            last = lines(out)[-1] if out.strip() else {"event": "summary", "ok": True}
            assert last["event"] == "summary" and last["ok"], (out[-500:], err)
        else:
            assert proc.returncode in (0, 130), err
            assert "Traceback" not in err, err
        if proc.returncode == 130:
            assert err.strip().splitlines() == ["uffdctl: interrupted"]
        assert pool_state() == before
