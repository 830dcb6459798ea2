"""The repository's promises: README's two commands, and CI running the second."""

from __future__ import annotations

import re

from conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)


def test_readme_opens_with_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    cmds = readme_commands()
    assert len(cmds) >= 2
    first_block = text.index("```sh")
    assert text[:first_block].strip().startswith("# uffdctl")
    assert "uffdctl probe" in cmds[0]
    assert "pytest" in cmds[1] and "[test]" in cmds[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci
