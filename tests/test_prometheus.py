"""`uffdctl ps --format prometheus` and `uffdctl inspect PID --format prometheus`: the same
values as --format json, output promtool accepts without a lint complaint, untrusted names
escaped into valid UTF-8, --output replacing the file atomically, and the alert rules and
systemd units of docs/ checked and run.

promtool is Debian's (tools/fetch-promtool; .ci/run exports UFFDCTL_PROMTOOL): found through
that variable, PATH or the fetch script's cache, else fetched; the tests that need it skip
only outside CI when it cannot be had."""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, ROOT, helper_process

from uffdctl import handlers, procs
from uffdctl.output import inert
from uffdctl.render import prometheus
from uffdctl.render.documents import ps_json

HOLDER = str(ROOT / "tests" / "helpers" / "uffd_holder.py")
FETCH = ROOT / "tools" / "fetch-promtool"
ALERTS = ROOT / "docs" / "prometheus-alerts.yml"
NODE_EXPORTER_DOC = ROOT / "docs" / "node-exporter.md"
CACHES = [Path("/var/lib/uffdctl-kernels/promtool/bin/promtool"),
          Path.home() / ".cache" / "uffdctl" / "promtool" / "bin" / "promtool"]

RunCli = Callable[..., subprocess.CompletedProcess[str]]


# ----- promtool -------------------------------------------------------------------------------

def _runs(path: str | Path) -> bool:
    try:
        return subprocess.run([str(path), "--version"], capture_output=True,
                              timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _find_promtool() -> tuple[str | None, str]:
    """A working promtool, or None and why not."""
    given = os.environ.get("UFFDCTL_PROMTOOL")
    if given:
        if _runs(given):
            return given, ""
        pytest.fail(f"UFFDCTL_PROMTOOL={given} does not run")
    for candidate in [shutil.which("promtool"), *CACHES]:
        if candidate and _runs(candidate):
            return str(candidate), ""
    try:
        res = subprocess.run([str(FETCH)], capture_output=True, text=True, timeout=600,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"tools/fetch-promtool: {exc}"
    path = res.stdout.strip()
    if res.returncode == 0 and path and _runs(path):
        return path, ""
    return None, (res.stderr.strip().splitlines() or ["tools/fetch-promtool failed"])[-1]


@pytest.fixture(scope="session")
def promtool() -> str:
    path, why = _find_promtool()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"no promtool in CI: {why}")
        pytest.skip(f"no promtool (UFFDCTL_PROMTOOL, PATH, tools/fetch-promtool): {why}")
    return path


def check_metrics(promtool: str, text: bytes | str) -> None:
    """`promtool check metrics`: parses, and lints clean (no output at all)."""
    data = text.encode() if isinstance(text, str) else text
    res = subprocess.run([promtool, "check", "metrics"], input=data, capture_output=True,
                         timeout=60)
    assert res.returncode == 0 and not res.stdout and not res.stderr, (
        res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace"))


# ----- the text format, parsed strictly --------------------------------------------------------

Sample = tuple[str, dict[str, str], float]

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _label_value(text: str, i: int) -> tuple[str, int]:
    """The label value starting after the opening quote at ``i``: its text, and the index
    after the closing quote.  Only the format's three escapes are accepted."""
    out = []
    while True:
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\n":
            raise AssertionError(f"raw line feed in a label value: {text!r}")
        if c == "\\":
            esc = text[i + 1]
            assert esc in _ESCAPES, f"invalid escape \\{esc} in {text!r}"
            out.append(_ESCAPES[esc])
            i += 2
            continue
        out.append(c)
        i += 1


def parse(data: bytes) -> tuple[list[Sample], dict[str, tuple[str, str]]]:
    """Samples and {name: (type, help)}; every line is a comment of HELP or TYPE or a
    sample; the bytes must be UTF-8."""
    text = data.decode("utf-8")  # strict: a byte that is not UTF-8 fails here
    assert text.endswith("\n")
    samples: list[Sample] = []
    meta: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"# (HELP|TYPE) ({_NAME}) (.*)", line)
        if m:
            meta.setdefault(m[2], ["", ""])[0 if m[1] == "TYPE" else 1] = m[3]
            continue
        m = re.match(rf"({_NAME})", line)
        assert m, line
        name, i, labels = m[1], m.end(), {}
        if line[i] == "{":
            i += 1
            while line[i] != "}":
                lm = re.compile(rf'({_NAME})="').match(line, i)
                assert lm, line
                labels[lm[1]], i = _label_value(line, lm.end())
                if line[i] == ",":
                    i += 1
            i += 1
        assert line[i] == " ", line
        samples.append((name, labels, float(line[i + 1:])))
    return samples, {k: (v[0], v[1]) for k, v in meta.items()}


def by_name(samples: list[Sample], pid: int | None = None) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        if pid is None or s[1].get("pid") == str(pid):
            out.setdefault(s[0], []).append(s)
    return out


def value(samples: list[Sample], name: str, pid: int, **labels: str) -> float | None:
    found = [v for n, lab, v in samples if n == name and lab.get("pid") == str(pid)
             and all(lab.get(k) == x for k, x in labels.items())]
    assert len(found) <= 1, (name, found)
    return found[0] if found else None


# ----- a real process holding userfaultfds ---------------------------------------------------

def holder(*args: str
           ) -> AbstractContextManager[tuple[subprocess.Popen[str], dict[str, Any]]]:
    return helper_process("uffd_holder.py", *args)


def _row(doc: dict[str, Any], pid: int) -> dict[str, Any]:
    (row,) = [p for p in doc["processes"] if p["pid"] == pid]
    return row


def _expected_handler(service: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(handler_held, handler_reading) as the JSON's service says."""
    if service is None:
        return None, None
    held = 1.0 if service["descriptors"] else 0.0
    reading = {"reading": 1.0, "gone": 0.0, "stopped": 0.0, "not-reading": 0.0}.get(
        service["verdict"] or "")
    return held, reading


def _assert_same_as_json(samples: list[Sample], row: dict[str, Any], pid: int,
                         stuck_between: tuple[float, float] | None) -> None:
    assert value(samples, "uffdctl_userfaultfds", pid) == row["uffds"]
    assert value(samples, "uffdctl_pending_faults", pid) == row["pending"]
    assert value(samples, "uffdctl_stuck_threads", pid) == row["stuck_threads"]
    assert value(samples, "uffdctl_unseen_threads", pid) == row["unseen_threads"]
    got = {lab["mode"]: v for n, lab, v in samples
           if n == "uffdctl_registered_bytes" and lab["pid"] == str(pid)}
    assert got == row["registered_bytes"]
    held, reading = _expected_handler(row["service"])
    assert value(samples, "uffdctl_handler_held", pid) == held
    assert value(samples, "uffdctl_handler_reading", pid) == reading
    stuck = value(samples, "uffdctl_stuck_seconds", pid)
    if stuck_between is None:
        assert stuck is None
    else:
        assert stuck is not None and stuck_between[0] <= stuck <= stuck_between[1]
    # Every per-process sample names it the same way (inspect's timing has the pid only).
    assert {lab.get("comm") for n, lab, _ in samples if lab.get("pid") == str(pid)
            and not n.startswith(("uffdctl_scan_", "uffdctl_last_scan_"))} == {inert(row["comm"])}


def _stuck_window(json_stuck: float | None, seconds_between: float) -> tuple[float, float] | None:
    """The prometheus run came after the JSON one: its stuck time is later by at most the
    time from the start of the one to the end of the other (the thread has not run since)."""
    if json_stuck is None:
        return None
    return json_stuck - 0.5, json_stuck + seconds_between + 0.5


def _prom(run_cli: RunCli, *args: str) -> bytes:
    """The command's standard output as bytes (UTF-8 whatever the locale)."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("GITHUB_OUTPUT", None)
    res = subprocess.run([sys.executable, "-m", "uffdctl", *args], capture_output=True,
                         env=env, timeout=120, cwd=ROOT)
    assert res.returncode == 0 and not res.stderr, res.stderr.decode(errors="replace")
    return res.stdout


def _scan_metrics(samples: list[Sample], started: float) -> None:
    scan = by_name(samples)
    (ts,) = scan["uffdctl_last_scan_timestamp_seconds"]
    assert started <= ts[2] <= time.time()
    (duration,) = scan["uffdctl_scan_duration_seconds"]
    assert 0 < duration[2] < time.time() - started + 1


@pytest.mark.slow
def test_ps_metrics_are_the_json_values_and_promtool_accepts_them(
        run_cli: RunCli, promtool: str) -> None:
    if not IS_ROOT:
        pytest.skip("who serves the holder's faults is read with ptrace access (root)")
    with holder("--fault") as (proc, _info):
        json_started = time.monotonic()
        res = run_cli("ps", "--format", "json")
        assert res.returncode == 0, res.stderr
        started = time.time()
        out = _prom(run_cli, "ps", "--format", "prometheus")
        between = time.monotonic() - json_started
        same = run_cli("ps", "--json", "--format", "json")  # the same twice is no conflict
        assert same.returncode == 0, same.stderr
    doc = json.loads(res.stdout)
    check_metrics(promtool, out)
    samples, meta = parse(out)
    row = _row(doc, proc.pid)
    assert row["stuck_threads"] == 1 and row["pending"] == 1 and row["registered_bytes"]
    _assert_same_as_json(samples, row, proc.pid, _stuck_window(row["stuck_for_s"], between))
    # Nobody reads the holder's descriptor: the handler is "gone", and the descriptor is held.
    assert value(samples, "uffdctl_handler_reading", proc.pid) == 0
    assert value(samples, "uffdctl_handler_held", proc.pid) == 1
    scan = by_name(samples)
    assert scan["uffdctl_processes_scanned"][0][2] > 1
    _scan_metrics(samples, started)
    # Every family a gauge, its HELP given, only names the module lists.
    assert set(meta) <= set(prometheus.metric_names())
    assert all(t == "gauge" and h for t, h in meta.values())
    assert {s[0] for s in samples} == set(meta)
    # In pid order within each family.
    for fam in scan.values():
        pids = [int(s[1]["pid"]) for s in fam if "pid" in s[1]]
        assert pids == sorted(pids)


@pytest.mark.slow
def test_inspect_metrics_are_the_json_values(run_cli: RunCli, promtool: str) -> None:
    if not IS_ROOT:
        pytest.skip("who serves the holder's faults is read with ptrace access (root)")
    with holder("--fault") as (proc, _info):
        json_started = time.monotonic()
        res = run_cli("inspect", "-f", "json", str(proc.pid))
        assert res.returncode == 0, res.stderr
        started = time.time()
        out = _prom(run_cli, "inspect", "-f", "prometheus", str(proc.pid))
        between = time.monotonic() - json_started
    doc = json.loads(res.stdout)
    check_metrics(promtool, out)
    samples, _meta = parse(out)
    stuck = [t["stuck_for_s"] for t in doc["stuck_threads"] if t["stuck_for_s"] is not None]
    row = {"uffds": len(doc["uffds"]), "pending": sum(u["pending"] for u in doc["uffds"]),
           "stuck_threads": len(doc["stuck_threads"]),
           "unseen_threads": (doc["unseen_threads"] or {}).get("threads", 0),
           "registered_bytes": {}, "service": doc["service"], "comm": doc["comm"]}
    for r in doc["regions"]:
        for m in r["modes"]:
            row["registered_bytes"][m] = row["registered_bytes"].get(m, 0) + r["end"] - r["start"]
    _assert_same_as_json(samples, row, proc.pid,
                         _stuck_window(max(stuck) if stuck else None, between))
    assert {s[0] for s in samples if "pid" not in s[1]} == set()  # every sample names it
    assert "uffdctl_processes_scanned" not in by_name(samples)
    _scan_metrics(samples, started)


def test_the_same_report_renders_the_same_numbers_as_json() -> None:
    """In one process, from one scan: exactly the JSON's numbers, stuck seconds included."""
    with holder("--fault") as (proc, _info):
        report = procs.scan_all()
    doc = ps_json(report)
    samples, _ = parse(prometheus.ps_metrics(report, 1.5e9, 0.25).encode())
    for row in doc["processes"]:
        pid = row["pid"]
        exact = row["stuck_for_s"]
        assert value(samples, "uffdctl_stuck_seconds", pid) == exact
        _assert_same_as_json(samples, row, pid, None if exact is None else (exact, exact))
    assert proc.pid in {r["pid"] for r in doc["processes"]}
    scan = by_name(samples)
    assert scan["uffdctl_processes_scanned"] == [("uffdctl_processes_scanned", {},
                                                  float(report.scanned))]
    assert scan["uffdctl_last_scan_timestamp_seconds"][0][2] == 1.5e9
    assert scan["uffdctl_scan_duration_seconds"][0][2] == 0.25
    unreadable = {s[1]["reason"]: s[2] for s in scan.get("uffdctl_processes_unreadable", [])}
    assert unreadable == {k: float(v) for k, v in report.unreadable.items()}


# ----- the renderer on its own ------------------------------------------------------------------

def _service(verdict: str | None, files: int) -> handlers.Service:
    f = handlers.UffdFile([handlers.Holding(7, "h", 3, "S")], 0, 0, "")
    return handlers.Service(1, [f] * files, "own", verdict)


def test_samples_are_omitted_where_the_fact_is_unknown(promtool: str) -> None:
    rows = [
        procs.PsRow(30, "reading", 1, {"missing": 1}, 1, 0, 0, 0, {"missing": 4096}, None,
                    _service(handlers.READING, 1)),
        procs.PsRow(10, "gone", 1, {"wp": 2}, 2, 2, 1, 0, {"wp": 8192, "minor": 0}, 12.5,
                    _service(handlers.GONE, 1)),
        procs.PsRow(20, "unknown", 0, {}, 0, 0, 3, 2, {}, None, _service(handlers.UNKNOWN, 0)),
        procs.PsRow(40, "quiet", 1, {}, 0, 0, 0, 0, {}, None, None),
        procs.PsRow(50, "stopped", 1, {}, 0, 1, 0, 0, {}, None, _service(handlers.STOPPED, 1)),
        procs.PsRow(60, "notread", 1, {}, 0, 1, 0, 0, {}, None,
                    _service(handlers.NOT_READING, 1)),
        procs.PsRow(70, "idle", 1, {"missing": 1}, 1, 0, 0, 0, {"missing": 4096}, None,
                    _service(None, 1)),
    ]
    report = procs.PsReport(rows, 99, {"zeta": 2, "alpha \"q\"\n": 1})
    text = prometheus.ps_metrics(report, 1700000000.25, 0.5)
    check_metrics(promtool, text)
    samples, _ = parse(text.encode())
    fams = by_name(samples)
    assert [int(s[1]["pid"]) for s in fams["uffdctl_userfaultfds"]] == [10, 20, 30, 40, 50, 60,
                                                                         70]
    assert {(s[1]["pid"], s[2]) for s in fams["uffdctl_stuck_seconds"]} == {("10", 12.5)}
    # A mode with 0 bytes is still a sample when the row lists it; none invented.
    assert [(s[1]["pid"], s[1]["mode"], s[2]) for s in fams["uffdctl_registered_bytes"]] == [
        ("10", "wp", 8192), ("10", "minor", 0), ("30", "missing", 4096),
        ("70", "missing", 4096)]
    held = {s[1]["pid"]: s[2] for s in fams["uffdctl_handler_held"]}
    assert held == {"10": 1, "20": 0, "30": 1, "50": 1, "60": 1, "70": 1}  # 40: no service
    reading = {s[1]["pid"]: s[2] for s in fams["uffdctl_handler_reading"]}
    assert reading == {"10": 0, "30": 1, "50": 0, "60": 0}  # unknown and None: no sample
    assert [(s[1]["reason"], s[2]) for s in fams["uffdctl_processes_unreadable"]] == [
        ('alpha "q"\\x0a', 1), ("zeta", 2)]
    assert fams["uffdctl_last_scan_timestamp_seconds"][0][2] == 1700000000.25


def test_an_empty_scan_is_only_the_scan(promtool: str) -> None:
    text = prometheus.ps_metrics(procs.PsReport([], 5, {}), 1.0, 0.001)
    check_metrics(promtool, text)
    samples, meta = parse(text.encode())
    assert set(meta) == {"uffdctl_processes_scanned", "uffdctl_scan_duration_seconds",
                         "uffdctl_last_scan_timestamp_seconds"}
    assert len(samples) == 3


@pytest.mark.parametrize("number,text", [(3, "3"), (True, "1"), (0.5, "0.5"), (1e-7, "1e-07"),
                                         (math.inf, "+Inf"), (-math.inf, "-Inf"),
                                         (math.nan, "NaN"), (1.7e9 + 0.25, "1700000000.25")])
def test_numbers_are_go_parsable(number: float, text: str) -> None:
    report = procs.PsReport([], 0, {})
    out = prometheus.ps_metrics(report, number, 0)
    assert f"uffdctl_last_scan_timestamp_seconds {text}\n" in out


# ----- untrusted names ---------------------------------------------------------------------------

# 14 bytes, comm holds 15: a quote, a backslash, a line feed, ESC, a closing brace, a comma,
# an equals sign, a valid two-byte character and a byte that is not UTF-8 (0xff, which
# Python hands over as U+DCFF).
HOSTILE = 'a"b\\c\n\x1b},=é\udcff'


def test_a_hostile_command_name_is_escaped_and_valid(run_cli: RunCli, promtool: str) -> None:
    assert len(HOSTILE.encode("utf-8", "surrogateescape")) <= 15
    with holder("--fault", "--name", HOSTILE) as (proc, _info):
        with open(f"/proc/{proc.pid}/comm", "rb") as f:
            assert f.read().rstrip(b"\n") == HOSTILE.encode("utf-8", "surrogateescape")
        outputs = [_prom(run_cli, "ps", "-f", "prometheus"),
                   _prom(run_cli, "inspect", "-f", "prometheus", str(proc.pid))]
    want = inert(HOSTILE)
    assert want == 'a"b\\c\\x0a\\x1b},=é\\xff'
    for out in outputs:
        check_metrics(promtool, out)
        out.decode("utf-8")  # valid UTF-8 (parse() checks it too)
        assert b"\x1b" not in out and b"\xff" not in out
        # On the wire: the backslashes and the quote escaped, no raw line feed in a value.
        assert 'comm="a\\"b\\\\c\\\\x0a\\\\x1b},=é\\\\xff"'.encode() in out
        samples, _ = parse(out)
        comms = {lab["comm"] for _n, lab, _v in samples
                 if lab.get("pid") == str(proc.pid) and "comm" in lab}
        assert comms == {want}
        assert value(samples, "uffdctl_stuck_threads", proc.pid) == 1


def test_label_escaping() -> None:
    assert prometheus.escape_label('q"\\\n\t\x7f\udc80\u202eok') == (
        'q\\"\\\\\\\\x0a\\\\x09\\\\x7f\\\\x80\\\\u202eok')
    assert prometheus.escape_label("qemu-system-x86") == "qemu-system-x86"
    assert prometheus.escape_label("CPU 0/KVM é") == "CPU 0/KVM é"


# ----- --output ------------------------------------------------------------------------------

def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("GITHUB_OUTPUT", None)
    return subprocess.run([sys.executable, "-m", "uffdctl", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=cwd or ROOT)


@pytest.mark.parametrize("command", [["ps"], ["inspect", "{pid}"]], ids=["ps", "inspect"])
def test_output_replaces_atomically_keeping_owner_and_mode(tmp_path: Path, promtool: str,
                                                           command: list[str]) -> None:
    args = [a.replace("{pid}", str(os.getpid())) for a in command]
    target = tmp_path / "uffdctl.prom"
    target.write_text("old\n")
    os.chmod(target, 0o640)
    owner = (65534, 65534) if IS_ROOT else (os.getuid(), os.getgid())
    if IS_ROOT:
        os.chown(target, *owner)
    before = target.stat()
    res = _run(*args, "--format", "prometheus", "--output", str(target))
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stderr
    after = target.stat()
    assert after.st_ino != before.st_ino  # a new file renamed into place
    assert stat.S_IMODE(after.st_mode) == 0o640 and (after.st_uid, after.st_gid) == owner
    check_metrics(promtool, target.read_bytes())
    assert [p.name for p in tmp_path.iterdir()] == ["uffdctl.prom"]  # no temporary left

    # A symbolic link is written through: the link stays, the file it names is replaced.
    real = tmp_path / "real"
    real.mkdir()
    (real / "metrics.prom").write_text("old\n")
    os.chmod(real / "metrics.prom", 0o604)
    link = tmp_path / "link.prom"
    link.symlink_to(real / "metrics.prom")
    res = _run(*args, "-f", "json", "-o", str(link))
    assert res.returncode == 0 and res.stdout == "", res.stderr
    assert link.is_symlink() and os.readlink(link) == str(real / "metrics.prom")
    assert stat.S_IMODE((real / "metrics.prom").stat().st_mode) == 0o604
    json.loads((real / "metrics.prom").read_text())

    # A new file: 0666 less the umask, as the shell's > makes it.
    fresh = tmp_path / "fresh.prom"
    res = _run(*args, "-f", "prometheus", "-o", str(fresh))
    assert res.returncode == 0, res.stderr
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask


@pytest.mark.parametrize("command", [["ps"], ["inspect", "{pid}"]], ids=["ps", "inspect"])
@pytest.mark.parametrize("fmt", ["prometheus", "json"])
def test_output_into_a_missing_directory_is_one_line_and_status_1(
        tmp_path: Path, command: list[str], fmt: str) -> None:
    args = [a.replace("{pid}", str(os.getpid())) for a in command]
    target = tmp_path / "missing" / "uffdctl.prom"
    res = _run(*args, "--format", fmt, "--output", str(target))
    assert res.returncode == 1, res.stderr
    assert res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"uffdctl: cannot write {target}: ") and "(fix: " in line
    assert "does not exist" in line and "Traceback" not in res.stderr
    assert not target.parent.exists()


def test_output_into_a_directory_keeps_it(tmp_path: Path) -> None:
    res = _run("ps", "-f", "prometheus", "-o", str(tmp_path))
    assert res.returncode == 1
    (line,) = res.stderr.splitlines()
    assert "it is a directory" in line and "(fix: " in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [
    ["ps", "--json", "--format", "prometheus"],
    ["ps", "--output", "x.prom"],
    ["ps", "-f", "table", "-o", "x.prom"],
    ["inspect", "--json", "-f", "prometheus", "{pid}"],
    ["inspect", "-w", "-f", "prometheus", "{pid}"],
    ["inspect", "-w", "-o", "x.prom", "{pid}"],
    ["inspect", "-o", "x.prom", "{pid}"],
    ["ps", "-f", "openmetrics"],
])
def test_format_and_output_usage_errors(tmp_path: Path, args: list[str]) -> None:
    res = _run(*[a.replace("{pid}", str(os.getpid())) for a in args], cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_prometheus_output_is_utf8_in_any_locale(run_cli: RunCli) -> None:
    """The exposition format is UTF-8: a latin-1 or ASCII locale must not turn a name into
    backslash escapes the format does not have."""
    with holder("--name", "vm-é") as (proc, _info):
        env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "ascii",
               "PYTHONUTF8": "0", "NO_COLOR": "1"}
        res = subprocess.run([sys.executable, "-m", "uffdctl", "inspect", "-f", "prometheus",
                              str(proc.pid)], capture_output=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    samples, _ = parse(res.stdout)
    assert {lab["comm"] for _n, lab, _v in samples if "comm" in lab} == {"vm-é"}


# ----- docs/prometheus-alerts.yml ---------------------------------------------------------------

def _exprs(path: Path) -> list[str]:
    """The rules' expressions (plain, or folded with >- over the lines indented below)."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        if m[2] not in (">-", ">", "|", "|-"):
            out.append(m[2])
            continue
        indent, body = len(m[1]), []
        for nxt in lines[i + 1:]:
            if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= indent:
                break
            body.append(nxt.strip())
        out.append(" ".join(b for b in body if b))
    return out


def test_alert_rules_pass_promtool_and_use_only_emitted_metrics(promtool: str) -> None:
    res = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 3 rules found" in res.stdout
    exprs = _exprs(ALERTS)
    assert len(exprs) == 3
    used = {n for e in exprs for n in re.findall(r"\b[a-z_:][a-z0-9_:]*\b", e)
            if n.startswith("uffdctl_")}
    assert used <= set(prometheus.metric_names()), used - set(prometheus.metric_names())
    assert used >= {"uffdctl_stuck_seconds", "uffdctl_handler_reading",
                    "uffdctl_pending_faults", "uffdctl_stuck_threads",
                    "uffdctl_last_scan_timestamp_seconds"}
    # The names in docs/ and the man page are the renderer's too.
    for doc in (NODE_EXPORTER_DOC, ROOT / "man" / "uffdctl-ps.1"):
        named = set(re.findall(r"uffdctl_[a-z_]+[a-z]", doc.read_text().replace("\\", "")))
        assert named <= set(prometheus.metric_names()), (doc.name, named)
    assert set(prometheus.metric_names()) <= set(re.findall(
        r"uffdctl_[a-z_]+[a-z]", (ROOT / "man" / "uffdctl-ps.1").read_text()))


def _series(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{prometheus.escape_label(v)}"' for k, v in labels.items()) + "}"


def test_alert_expressions_fire_on_a_real_scrape(tmp_path: Path, promtool: str,
                                                 run_cli: RunCli) -> None:
    """The rules' expressions, evaluated by promtool on series with the labels a real scan of
    a process stuck in a fault nobody reads gives (plus node_exporter's instance)."""
    if not IS_ROOT:
        pytest.skip("who serves the holder's faults is read with ptrace access (root)")
    with holder("--fault") as (proc, _info):
        samples, _ = parse(_prom(run_cli, "ps", "-f", "prometheus"))
    stuck, unhandled, stale = _exprs(ALERTS)
    mine = [(n, {**lab, "instance": "node1"}, v) for n, lab, v in samples
            if lab.get("pid") == str(proc.pid)]
    series = []
    for name, labels, v in mine:
        # 15 s apart for 10 minutes; the stuck time grows with the clock.
        # Whole seconds: promtool adds the step again and again, and 0.1-like fractions
        # then differ in the last bit from one addition.
        values = (f"{round(v)}+15x40" if name == "uffdctl_stuck_seconds"
                  else f"{v!r}+0x40")
        series.append({"series": name + _series(labels), "values": values})
    # The last scan at 1 min, then none: the file goes stale.
    series.append({"series": 'uffdctl_last_scan_timestamp_seconds{instance="node1"}',
                   "values": "0+15x4 60x36"})
    who = {k: v for k, v in mine[0][1].items() if k in ("pid", "comm", "instance")}
    stuck_at_2m = value(samples, "uffdctl_stuck_seconds", proc.pid)
    assert stuck_at_2m is not None
    tests = {"tests": [{"interval": "15s", "input_series": series, "promql_expr_test": [
        {"expr": stuck, "eval_time": "2m",
         "exp_samples": [{"labels": "uffdctl_stuck_seconds" + _series(who),
                          "value": round(stuck_at_2m) + 120}]},
        {"expr": unhandled, "eval_time": "2m",
         "exp_samples": [{"labels": "uffdctl_handler_reading" + _series(who), "value": 0}]},
        {"expr": stale, "eval_time": "1m", "exp_samples": []},
        {"expr": stale, "eval_time": "5m",
         "exp_samples": [{"labels": '{instance="node1"}', "value": 240}]},
    ]}]}
    # JSON is YAML: promtool reads it as the unit test file.
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(json.dumps(tests, indent=1))
    res = subprocess.run([promtool, "test", "rules", str(test_file)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr


# ----- docs/node-exporter.md ------------------------------------------------------------------

def _units() -> dict[str, str]:
    """The systemd units in the doc: file name -> text (the ini block after its path)."""
    text = NODE_EXPORTER_DOC.read_text()
    found = re.findall(r"`/etc/systemd/system/([\w.-]+)`:\s*\n\s*```ini\n(.*?)```", text, re.S)
    return dict(found)


def test_the_doc_installs_from_the_repository_not_pypi() -> None:
    text = NODE_EXPORTER_DOC.read_text()
    assert "not published" in text
    assert not re.search(r"pip install\s+(-\S+\s+)*uffdctl\b", text)
    assert "--collector.textfile.directory" in text
    assert "docs/prometheus-alerts.yml" in text


def test_the_systemd_units_of_the_doc_verify_and_their_command_runs(
        tmp_path: Path, promtool: str) -> None:
    units = _units()
    assert set(units) == {"uffdctl-textfile.service", "uffdctl-textfile.timer"}
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", units["uffdctl-textfile.service"], re.M)
    argv = shlex.split(exec_start)
    assert Path(argv[0]).name == "uffdctl" and argv[1:3] == ["ps", "--format"]
    target = Path(argv[argv.index("--output") + 1])
    assert target.suffix == ".prom"
    textfile_dir = str(target.parent)
    assert f"ReadWritePaths={textfile_dir}" in units["uffdctl-textfile.service"]
    timer = units["uffdctl-textfile.timer"]
    assert "OnUnitActiveSec=15s" in timer and "WantedBy=timers.target" in timer

    # The command, as the unit runs it, into a temporary directory instead.
    out_dir = tmp_path / "node-exporter"
    out_dir.mkdir()
    script = Path(sys.executable).parent / "uffdctl"
    command = [sys.executable, "-m", "uffdctl", *argv[1:]]
    command = [a.replace(textfile_dir, str(out_dir)) for a in command]
    res = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/",
                         env={**os.environ, "NO_COLOR": "1"})
    assert res.returncode == 0 and res.stdout == "" and res.stderr == "", res.stderr
    written = out_dir / target.name
    check_metrics(promtool, written.read_bytes())
    assert [p.name for p in out_dir.iterdir()] == [target.name]

    # The units as systemd reads them, the paths made this machine's.
    if shutil.which("systemd-analyze") is None or not script.exists():
        return
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    for name, text in units.items():
        text = text.replace(argv[0], str(script)).replace(textfile_dir, str(out_dir))
        (unit_dir / name).write_text(text)
    res = subprocess.run(["systemd-analyze", "verify", *map(str, sorted(unit_dir.iterdir()))],
                         capture_output=True, text=True, timeout=120)
    complaints = [line for line in (res.stdout + res.stderr).splitlines()
                  if str(unit_dir) in line]
    assert res.returncode == 0 and not complaints, res.stdout + res.stderr


# ----- tools/fetch-promtool and CI --------------------------------------------------------------

def test_ci_fetches_promtool_before_the_tests() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    fetch = ci.index("tools/fetch-promtool")
    assert fetch < ci.index("-m pytest")
    line = ci[ci.rfind("\n", 0, fetch) + 1:ci.find("\n", fetch)]
    # An assignment of its own, so that set -e stops CI when the fetch fails (an `export`
    # of a failed command substitution succeeds).
    assert re.match(r"UFFDCTL_PROMTOOL=\$\(tools/fetch-promtool\); export UFFDCTL_PROMTOOL",
                    line), line


def test_fetch_promtool_reuses_its_cache_without_apt(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "promtool"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'promtool, version 0'\n")
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "UFFDCTL_PROMTOOL_CACHE": str(tmp_path),
           "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(FETCH)], capture_output=True, text=True, env=env,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0 and res.stdout == f"{fake}\n" and res.stderr == "", res.stderr


def test_fetch_promtool_without_apt_says_why(tmp_path: Path) -> None:
    bindir = tmp_path / "path"
    bindir.mkdir()
    for tool in ("mkdir", "flock", "id", "dirname", "mktemp", "rm", "chmod", "cat"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    env = {"PATH": str(bindir), "UFFDCTL_PROMTOOL_CACHE": str(tmp_path / "cache"),
           "HOME": str(tmp_path)}
    res = subprocess.run([shutil.which("bash") or "/bin/bash", str(FETCH)],
                         capture_output=True, text=True, env=env, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 1 and res.stdout == ""
    (line,) = res.stderr.splitlines()
    assert line.startswith("fetch-promtool: no apt-get")


def test_the_prometheus_path_does_not_import_rich() -> None:
    for args in (["ps", "-f", "prometheus"], ["inspect", "-f", "prometheus", str(os.getpid())]):
        res = subprocess.run([sys.executable, "-X", "importtime", "-m", "uffdctl", *args],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert res.returncode == 0, res.stderr
        imported = {line.rsplit("|", 1)[-1].strip() for line in res.stderr.splitlines()
                    if line.startswith("import time:")}
        assert "uffdctl.render.prometheus" in imported
        assert not {m for m in imported if m.split(".")[0] == "rich"}
