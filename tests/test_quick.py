"""`uffdctl probe --json`, `inspect PID --json` and `ps --json` run without click
(uffdctl/quick.py): the same answer, status and stderr as the same request parsed by click,
for root and for nobody, with stdout closed too.

`--format json` makes a command line click's (quick.QUICK lists only flags), so
`probe --json --format json` is the click twin of `probe --json`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest

from uffdctl import quick

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.mark.parametrize("argv, quick_line", [
    (["probe", "--json"], True),
    (["probe", "--no-ioctl-check", "--json"], True),
    (["probe"], False),  # the table: rich is imported anyway
    (["probe", "--json", "--json"], False),  # repeated: click's to take
    (["probe", "--json", "--format", "json"], False),
    (["probe", "--json", "-o", "/tmp/x"], False),
    (["probe", "--json", "--help"], False),
    (["probe", "--json", "--bogus"], False),  # click words the usage error
    (["inspect", "1", "--json"], True),
    (["inspect", "--json", "-a", "1"], True),
    (["inspect", "1"], False),  # the table
    (["inspect", "+1", "--json"], False),  # click reads it as 1
    (["inspect", "1", "2", "--json"], False),
    (["inspect", "12345678", "--json"], False),  # longer than any pid: click's
    (["inspect", "1" * 5001, "--json"], False),
    (["inspect", "--json", "-n", "1", "1"], False),
    (["inspect", "1", "--json", "--watch"], False),
    (["ps", "--json"], True),
    (["ps", "--json", "-o", "x"], False),
    (["demo", "minor", "--json"], False),
    ([], False),
])
def test_which_lines_are_quick(argv: list[str], quick_line: bool) -> None:
    assert (quick.command(argv) is not None) == quick_line


def _stable(out: str) -> dict[str, object]:
    """The document without the huge page counts of now (another process may take pages
    between the two runs)."""
    doc = json.loads(out)
    assert isinstance(doc, dict)
    for key in ("hugepages", "capacity"):
        doc.pop(key)
    return doc


def test_probe_json_does_not_import_click(run_cli: Run) -> None:
    res = run_cli("probe", "--json", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert res.returncode in (0, 3), res.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines()
                if line.startswith("import time:")]
    assert "uffdctl.probe" in imported
    assert not [m for m in imported if m.split(".")[0] == "click"]
    json.loads(res.stdout)


@pytest.mark.parametrize("flags", [("--json",), ("--json", "--no-ioctl-check")])
def test_quick_answers_as_click_does(run_cli: Run, flags: tuple[str, ...]) -> None:
    fast = run_cli("probe", *flags)
    parsed = run_cli("probe", *flags, "--format", "json")
    assert (fast.returncode, fast.stderr) == (parsed.returncode, parsed.stderr)
    assert _stable(fast.stdout) == _stable(parsed.stdout)


def test_quick_answers_nobody_as_click_does(as_nobody: Run) -> None:
    """As uid 65534 with no capabilities (on a fresh machine nothing may open a userfaultfd
    for it, or only for user-mode faults): the same status, cause and document."""
    fast = as_nobody("probe", "--json")
    parsed = as_nobody("probe", "--json", "--format", "json")
    assert "Traceback" not in fast.stderr
    assert (fast.returncode, fast.stderr) == (parsed.returncode, parsed.stderr)
    assert _stable(fast.stdout) == _stable(parsed.stdout)


def test_quick_with_stdout_closed(run_cli: Run) -> None:
    """Nowhere to write the answer: the same ending as click's path, no traceback."""
    code = ("import os, runpy, sys; os.close(1); sys.argv = ['uffdctl', *sys.argv[1:]]; "
            "runpy.run_module('uffdctl', run_name='__main__')")
    runs = [subprocess.run([sys.executable, "-c", code, "probe", "--json", *extra],
                           capture_output=True, text=True, timeout=120)
            for extra in ((), ("--format", "json"))]
    assert "Traceback" not in runs[0].stderr
    assert (runs[0].returncode, runs[0].stderr) == (runs[1].returncode, runs[1].stderr)


def test_inspect_and_ps_as_click_does(run_cli: Run) -> None:
    """This very test process (it holds no userfaultfd: nothing registered, no survey), a
    pid that is not there, and ps: the same status, stderr and document either way."""
    import os

    for args in (["inspect", str(os.getpid()), "--json"], ["inspect", "--json", "0"],
                 ["inspect", "--json", "4194304"]):
        fast = run_cli(*args)
        parsed = run_cli(*args, "--format", "json")
        assert "Traceback" not in fast.stderr
        assert (fast.returncode, fast.stderr) == (parsed.returncode, parsed.stderr), args
        if fast.returncode == 0:
            a, b = json.loads(fast.stdout), json.loads(parsed.stdout)
            for doc in (a, b):  # this process's own counters move between the two runs
                doc.pop("minflt")
                doc.pop("state")
            assert a == b
    fast, parsed = run_cli("ps", "--json"), run_cli("ps", "--json", "--format", "json")
    assert (fast.returncode, fast.stderr) == (parsed.returncode, parsed.stderr)
    assert json.loads(fast.stdout).keys() == json.loads(parsed.stdout).keys()
