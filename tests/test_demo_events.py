"""`demo --json` as a stream a program consumes: every line valid against the schema built
from demo.STEPS (validated with jsonschema, not by hand), every step named, and one final
summary whose exit_status is the process's, however the run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import jsonschema
import pytest
from conftest import ROOT
from demo_util import lines, summary

from uffdctl import demo, errors, memtypes, scenarios
from uffdctl.render.documents import DEMO_SCHEMA_VERSION, demo_schema

VALIDATOR = jsonschema.Draft202012Validator(demo_schema())


def _valid(stdout: str) -> list[dict[str, Any]]:
    events = lines(stdout)
    for e in events:
        errs = sorted(VALIDATOR.iter_errors(e), key=str)
        assert not errs, (e, [x.message for x in errs][:3])
    assert [e["event"] for e in events].count("summary") == 1
    assert events[-1]["event"] == "summary"
    return events


def test_schema_itself_is_valid_and_covers_every_step() -> None:
    jsonschema.Draft202012Validator.check_schema(demo_schema())
    for name, (what, fields) in demo.STEPS.items():
        assert what and name.isidentifier(), name
        assert not {"event", "name", "text"} & set(fields), name


def _cases() -> list[Any]:
    out = []
    for mode, sc in scenarios.SCENARIOS.items():
        for backing in sc.backings:
            kind = memtypes.MEMORY_BY_NAME[backing].kind
            marks = [pytest.mark.uffd(f"{sc.register_mode}:{kind}")]
            out.append(pytest.param(mode, backing, marks=marks, id=f"{mode}-{backing}"))
    return out


@pytest.mark.parametrize(("mode", "backing"), _cases())
def test_every_line_of_every_demo_matches_the_schema(run_cli, hugepages,  # type: ignore[no-untyped-def]
                                                     mode: str, backing: str) -> None:
    with hugepages(8) if backing == "hugetlb" else _nothing():
        res = run_cli("demo", mode, "--backing", backing, "--pages", "4", "--threads", "2",
                      "--json", timeout=120)
    assert res.returncode == 0, res.stderr
    events = _valid(res.stdout)
    steps = [e for e in events if e["event"] == "step"]
    names = [e["name"] for e in steps]
    assert set(names) <= set(demo.STEPS)
    assert names[0] == "opened" and "registered" in names and "verified" in names
    # The two moments of the story that carry addresses: the mapping, then its registration
    # on the same range (minor: the second mapping, the plain one is alias_address).
    (mapped,) = [e for e in steps if e["name"] == "mapped"]
    (registered,) = [e for e in steps if e["name"] == "registered"]
    assert (registered["address"], registered["length"]) == (mapped["address"],
                                                              mapped["length"])
    assert mapped["length"] == mapped["pages"] * mapped["page_size"]
    assert (mapped["alias_address"] is not None) == (mode == "minor")
    s = summary(res.stdout)
    assert (s["exit_status"], s["ok"], s["schema_version"]) == (0, True, DEMO_SCHEMA_VERSION)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.uffd("minor:shmem")
def test_a_failed_run_ends_with_its_summary_and_status_1(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "minor", "--backing", "shmem", "--stall", "--timeout", "0.5",
                  "--json", timeout=60)
    assert res.returncode == errors.FAILED
    events = _valid(res.stdout)
    (aborted,) = [e for e in events if e.get("name") == "aborted"]
    assert aborted["timeout_s"] == 0.5 and aborted["unresolved"] > 0
    assert events[-1]["exit_status"] == errors.FAILED and events[-1]["ok"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="emptying the huge page pool needs root")
@pytest.mark.uffd("minor:hugetlb")
def test_a_run_refused_after_it_started_still_ends_with_one_summary(
        run_cli, no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    """No free huge pages and --no-reserve: refused (exit 3) after the descriptor was
    opened; the last line is the summary, with the cause and fix stderr gives."""
    with no_free_hugepages():
        res = run_cli("demo", "minor", "--no-reserve", "--json")
    assert res.returncode == errors.UNAVAILABLE, res.stderr
    events = _valid(res.stdout)
    assert [e.get("name") for e in events[:-1]] == ["opened"]
    last = events[-1]
    assert (last["exit_status"], last["ok"], last["mode"], last["backing"]) == \
        (errors.UNAVAILABLE, False, "minor", "hugetlb")
    (line,) = res.stderr.strip().splitlines()
    assert line == f"uffdctl: {last['error']} (fix: {last['fix']})"


def test_a_usage_error_found_by_the_scenario_ends_with_status_2(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("demo", "missing", "--backing", "hugetlb", "--zero", "--json")
    assert res.returncode == errors.USAGE
    last = _valid(res.stdout)[-1]
    assert last["exit_status"] == errors.USAGE and "--zero" in last["error"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.uffd("minor:shmem")
def test_an_interrupted_run_ends_with_one_summary_and_128_plus_the_signal(sig: int) -> None:
    """Stopped while a thread waits in a fault (the handler stalls on purpose): the stream
    still ends with the summary, and its exit_status is the process's."""
    proc = subprocess.Popen([sys.executable, "-m", "uffdctl", "demo", "minor", "--backing",
                             "shmem", "--stall", "--timeout", "60", "--json"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if json.loads(line).get("name") == "touching":
            break
    proc.send_signal(sig)
    rest, err = proc.communicate(timeout=60)
    events = _valid("".join(out) + rest)
    assert proc.returncode == 128 + sig, err
    assert events[-1]["exit_status"] == 128 + sig and events[-1]["ok"] is False
    assert events[-1]["error"] == ("interrupted" if sig == signal.SIGINT else
                                   f"terminated by {signal.Signals(sig).name}")


def test_the_man_page_lists_every_step_with_its_fields() -> None:
    res = subprocess.run([sys.executable, "tools/demo_steps_man.py", "--check"], cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr

