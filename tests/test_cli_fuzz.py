"""No command line ever ends in a traceback or an exit status the man page does not document.

Command lines are generated from the click commands themselves (every command, every option,
hidden ones included), with values drawn from what breaks parsers: non-finite and huge
numbers, empty strings, control characters, bytes that are not UTF-8 (as surrogates, the way
Python hands them over from argv), paths that cannot be written.  The real CLI runs
in-process through uffdctl.cli.main() for most of them; demos (real runs) and a sample of the
rest run as subprocesses, the way a shell starts them.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from uffdctl import cli as cli_module

# man/uffdctl.1 EXIT STATUS and README's "Exit statuses" table.
DOCUMENTED = {0, 1, 2, 3, 4, 5, 130}

NUMBERS = ["0", "1", "2", "3", "-1", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e999",
           "-1e999", "1e-999", "0.05", "0.1", "0.5", "3600", "3601", "59", "60", "7200",
           "1_000", "0x10", "1e3", "", " ", "  7 ", "1.5", "00001", str(2**63), str(2**64 + 1),
           "9" * 30, "1" * 5000, "\u0663", "1\x1b[31m"]
STRINGS = ["", " ", "x", "-", "--", ",", ",,", "\x1b[31mred", "\x9b31m", "\udcff\udc80",
           "\u202eevil", "é", "bit_20", "bit 20", "BIT-63", "bit_64", "minor:hugetlb",
           "hugetlb:minor", "minor_hugetlbfs", "UFFD_FEATURE_MINOR_SHMEM", "continue",
           "UFFDIO_COPY", "missing+wp:shmem-private", "wp:anon,minor:shmem", "nope:nope",
           "a" * 300]
PAGE_SIZES = ["2M", "2m", "2048k", "4K", "0", "-2M", "nan", "", "1T", "9" * 30 + "G", "2MB",
              "abc", "\udcff"]  # never 1G: a real 1 GiB reservation is not a test's to make
JUNK = ["--bogus", "-x", "--help", "-h", "--version", "-V", "--", "extra", "--json=1",
        "--pages=", "-", "\udcff", "--no-such-option=\x1b[31m"]


def _commands() -> dict[tuple[str, ...], click.Command]:
    out: dict[tuple[str, ...], click.Command] = {(): cli_module.cli}
    assert isinstance(cli_module.cli, click.Group)
    for name, cmd in cli_module.cli.commands.items():
        out[(name,)] = cmd
        if isinstance(cmd, click.Group):
            for sub, subcmd in cmd.commands.items():
                out[(name, sub)] = subcmd
    return out


COMMANDS = _commands()
DEMOS = [path for path in COMMANDS if path[:1] == ("demo",) and len(path) == 2]
OTHERS = [path for path in COMMANDS if path not in DEMOS]


# Values the commands accept (a demo's kept small): half the command lines draw only these,
# so that commands really run (any refused value ends the run at parsing).
VALID = {"pages": ["1", "2", "3"], "written": ["0", "1", "2"], "threads": ["1", "2"],
         "timeout": ["0.1", "0.3", "1"], "page_size": ["2M", "2048k"],
         "seed": ["0", "1", "-5", str(2**70)], "interval": ["0.05", "0.1"],
         "count": ["1", "2"], "nfd_expiry": ["60", "7200", "31622400"],
         "require_": ["minor:hugetlb", "continue", "bit_20", "minor_shmem,UFFDIO_COPY",
                      "hugetlb:minor", "bit 63"],
         "pid": [str(os.getpid()), str(os.getppid()), "1"]}


def _values(param: click.Parameter, paths: list[str], demo: bool,
            valid: bool = False) -> st.SearchStrategy[str]:
    name = param.name or ""
    if valid and name in VALID:
        return st.sampled_from(VALID[name])
    if valid and isinstance(param.type, click.Choice):
        return st.sampled_from(list(param.type.choices))
    if name == "output":
        # Only inside the test's directory (the runs chdir there too: a relative one lands
        # there, never in the checkout).
        return st.sampled_from([*paths, "", " ", "rel", "-"])
    if name == "page_size":
        return st.sampled_from(PAGE_SIZES)
    if name == "pid":
        return st.sampled_from(["1", str(os.getpid()), "0", "-1", "999999999", "4194305",
                                str(2**64), "nan", "abc", ""] + NUMBERS[-6:])
    if demo and name in ("pages", "written", "threads"):
        # A demo really runs: valid values stay small, the invalid ones are refused at once.
        return st.sampled_from(["1", "2", "3", "0", "-1", "nan", "1e3", "", str(1 << 21),
                                "257", "9" * 30])
    if demo and name == "timeout":
        return st.sampled_from(["0.1", "0.3", "1", "0", "0.05", "nan", "inf", "-inf", "1e999",
                                "3601", "", "x"])
    if name == "interval":
        return st.sampled_from(["0.05", "0.1", "nan", "inf", "-1", "0", "0.01", "1e999", "",
                                "3601"])
    if isinstance(param.type, click.Choice):
        return st.sampled_from([*param.type.choices, "", "JSON", "nope", "\x1b"])
    if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType)):
        return st.sampled_from(NUMBERS)
    return st.sampled_from(STRINGS)


@st.composite
def command_lines(draw: st.DrawFn, paths: list[str], demos: bool) -> list[str]:
    path = draw(st.sampled_from(DEMOS if demos else OTHERS))
    cmd = COMMANDS[path]
    valid = draw(st.booleans())
    tokens: list[list[str]] = []
    for param in cmd.params:
        if isinstance(param, click.Argument):
            if valid or draw(st.integers(0, 9)):  # mostly present
                tokens.append([draw(_values(param, paths, demos, valid))])
            continue
        if not isinstance(param, click.Option) or not draw(st.booleans()):
            continue
        opt = draw(st.sampled_from(param.opts + param.secondary_opts))
        if param.is_flag or param.count:
            tokens.append([opt])
        else:
            tokens.append([opt, draw(_values(param, paths, demos, valid))])
    if not valid and draw(st.integers(0, 4)) == 0:
        tokens.append([draw(st.sampled_from(JUNK))])
    order = draw(st.permutations(range(len(tokens)))) if tokens else []
    argv = [*path]
    if demos:
        # Bounded, whatever else is drawn: these come first, so drawn values override them.
        argv += ["--pages", "2", "--timeout", "1", "--backing",
                 draw(st.sampled_from(["anon", "shmem"] if path[1] != "minor" else
                                      ["shmem", "hugetlb"]))]
    for i in order:
        argv += tokens[i]
    if path == ("inspect",):
        argv += ["--count", "1"]  # --watch ends after one look (after "--": a usage error)
    if path == ("probe",):
        # The ioctl checks race with other processes for free huge pages (probe._check_ioctl
        # lets an ENOMEM from mmap escape); that race is not what this test is about.
        argv += ["--no-ioctl-check"]
    return argv


@pytest.fixture
def paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dir").mkdir()
    (tmp_path / "existing").write_text("old\n")
    os.symlink("existing", tmp_path / "link")
    return [str(tmp_path / "out"), str(tmp_path / "no" / "such" / "out"), str(tmp_path / "dir"),
            str(tmp_path / "link"), "/dev/null", "/dev/full", str(tmp_path / "existing")]


@contextlib.contextmanager
def _process_state() -> Iterator[None]:
    """main() owns the process it runs in: signal dispositions, the signal mask, the
    unraisable hook.  In-process, the test process gets them back after each run."""
    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    handlers = {s: signal.getsignal(s) for s in sigs}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    hook = sys.unraisablehook
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, h in handlers.items():
            signal.signal(s, h)
        sys.unraisablehook = hook


def _in_process(argv: list[str]) -> tuple[int, bytes, str]:
    out, err = io.BytesIO(), io.StringIO()
    # Strict UTF-8 like a real stdout in a UTF-8 locale: a lone surrogate would fail here.
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="strict", write_through=True)
    code: object = None
    with _process_state(), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(err):
        try:
            cli_module.main(argv)
        except SystemExit as exc:
            code = exc.code
    stdout.flush()
    status = 0 if code is None else code if isinstance(code, int) else -1
    return status, out.getvalue(), err.getvalue()


def _subprocess(argv: list[str], cwd: str, timeout: float = 120) -> tuple[int, bytes, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GITHUB_OUTPUT", "UFFDCTL_DEBUG")}
    env["NO_COLOR"] = "1"
    env["PYTHONPATH"] = str(ROOT)  # this checkout, run from the test's directory
    res = subprocess.run([sys.executable, "-m", "uffdctl", *argv], capture_output=True,
                         timeout=timeout, cwd=cwd, env=env, stdin=subprocess.DEVNULL)
    return res.returncode, res.stdout, res.stderr.decode("utf-8", "backslashreplace")


def _check(argv: list[str], status: int, out: bytes, err: str) -> None:
    event(f"{' '.join(argv[:2])}: status {status}")
    assert status in DOCUMENTED, (argv, status, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    out.decode("utf-8")  # strict: no raw byte that is not UTF-8


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.delenv("UFFDCTL_DEBUG", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")


def test_generated_command_lines_in_process(paths: list[str], clean_env: None) -> None:
    @settings(max_examples=300, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(command_lines(paths, demos=False))
    def check(argv: list[str]) -> None:
        _check(argv, *_in_process(argv))

    check()


def test_generated_command_lines_as_processes(paths: list[str]) -> None:
    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(command_lines(paths, demos=False))
    def check(argv: list[str]) -> None:
        _check(argv, *_subprocess(argv, os.getcwd(), timeout=60))

    check()


def test_generated_demo_command_lines(paths: list[str]) -> None:
    """Real demos: few examples, two pages, a timeout of a second unless a drawn value
    replaces it (a drawn --stall then waits for it)."""
    @settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(command_lines(paths, demos=True))
    def check(argv: list[str]) -> None:
        _check(argv, *_subprocess(argv, os.getcwd(), timeout=120))

    check()
