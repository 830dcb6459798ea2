"""Man pages in step with the CLI, rendering cleanly; shell completion; help with examples;
the wheel carrying the pages."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import click
import pytest
from conftest import ROOT

from uffdctl.cli import cli

MAN = ROOT / "man"


def _commands() -> dict[str, click.Command]:
    """'probe', 'demo minor', ... -> the click command."""
    out: dict[str, click.Command] = {}
    assert isinstance(cli, click.Group)
    for name, cmd in cli.commands.items():
        if isinstance(cmd, click.Group):
            for sub, subcmd in cmd.commands.items():
                out[f"{name} {sub}"] = subcmd
        else:
            out[name] = cmd
    return out


def _page_for(command: str) -> Path:
    return MAN / f"uffdctl-{command.split()[0]}.1"


def _rendered(page: Path) -> str:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    res = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou", str(page)],
                         capture_output=True, text=True, check=True)
    return res.stdout


@pytest.mark.parametrize("page", sorted(MAN.glob("*.1")), ids=lambda p: p.name)
def test_page_renders_without_a_warning(page: Path) -> None:
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    res = subprocess.run(["groff", "-ww", "-man", "-z", str(page)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and res.stderr == "", res.stderr


@pytest.mark.parametrize("page", sorted(MAN.glob("*.1")), ids=lambda p: p.name)
def test_page_has_the_man_pages_7_sections(page: Path) -> None:
    text = page.read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES",
                    "EXAMPLES", "SEE ALSO"):
        assert f".SH {section}" in text, f"{page.name}: no {section}"
    see_also = text.split(".SH SEE ALSO", 1)[1]
    assert ".BR uffdctl" in see_also


def test_every_command_has_a_page_and_every_option_is_documented() -> None:
    assert {p.name for p in MAN.glob("*.1")} >= {"uffdctl.1"} | {
        _page_for(c).name for c in _commands()}
    top = _rendered(MAN / "uffdctl.1")
    for opt in ("--version", "-V", "--help"):
        assert opt in top
    for name, cmd in _commands().items():
        text = _rendered(_page_for(name))
        assert f"uffdctl {name}" in text, f"{name} missing from its page"
        for param in cmd.params:
            if not isinstance(param, click.Option) or param.hidden:
                continue
            for opt in param.opts + param.secondary_opts:
                assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", text), (
                    f"{opt} of `uffdctl {name}` is not in {_page_for(name).name}")
        for name_in_top in name.split()[:1]:
            assert name_in_top in top


def test_every_exit_status_in_the_help_is_in_the_page() -> None:
    for name, cmd in _commands().items():
        help_text = " ".join(filter(None, [cmd.help, cmd.epilog]))
        statuses = set(re.findall(r"\b(\d{1,3}) (?=[a-z])", help_text.split("Exit status:", 1)[-1]))
        page = _page_for(name).read_text().split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
        documented = set(re.findall(r"^\.B (\d+)$", page, re.M))
        assert statuses <= documented, (name, statuses - documented)


def test_every_command_help_has_an_example(run_cli) -> None:  # type: ignore[no-untyped-def]
    for name in ["", "demo", *_commands()]:
        res = run_cli(*name.split(), "--help")
        assert res.returncode == 0, res.stderr
        assert "Examples:" in res.stdout and "uffdctl" in res.stdout.split("Examples:")[1]


def test_wheel_installs_the_man_pages(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                          str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (wheel,) = tmp_path.glob("uffdctl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    pages = {Path(n).name for n in names if "/share/man/man1/" in n}
    assert pages == {p.name for p in MAN.glob("*.1")}
    assert "uffdctl/render/formats.py" in names and "uffdctl/pytest_plugin.py" in names


# ----- shell completion ---------------------------------------------------------------------

@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script_is_generated(run_cli, shell: str) -> None:  # type: ignore[no-untyped-def]
    res = run_cli(env={"_UFFDCTL_COMPLETE": f"{shell}_source"})
    assert res.returncode == 0, res.stderr
    assert "_UFFDCTL_COMPLETE" in res.stdout and "uffdctl" in res.stdout


def test_bash_completion_completes_commands_and_choices(run_cli) -> None:  # type: ignore[no-untyped-def]
    def complete(words: str) -> list[str]:
        res = run_cli(env={"_UFFDCTL_COMPLETE": "bash_complete", "COMP_WORDS": words,
                           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ")
                                                                    else 1))})
        assert res.returncode == 0, res.stderr
        return [line.split(",", 1)[1] for line in res.stdout.splitlines()]

    assert complete("uffdctl p") == ["probe", "ps"]
    assert set(complete("uffdctl demo ")) == {"minor", "missing", "wp"}
    assert complete("uffdctl probe --format ") == ["table", "json", "github", "env", "nfd",
                                                    "facts"]


def test_bash_completion_in_a_real_shell() -> None:
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    exe = Path(sys.executable).parent / "uffdctl"
    if not exe.exists():
        pytest.skip("uffdctl is not installed as a script next to this Python")
    script = (f'eval "$(_UFFDCTL_COMPLETE=bash_source {exe})"\n'
              f'COMP_WORDS=({exe} demo mi); COMP_CWORD=2\n'
              f"_uffdctl_completion {exe}\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert res.stdout.split() == ["minor", "missing"], res.stderr


def test_readme_samples_match_a_real_run() -> None:
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "readme_samples.py"), "--check"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr
