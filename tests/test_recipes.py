"""The recipes in docs/ run: each one's shell executed on this machine the way the system it
is written for executes it, against a copy of this repository.

- docs/github-actions.yml: every step in order, as a GitHub runner runs them (bash -e -o
  pipefail; GITHUB_OUTPUT, GITHUB_ENV, GITHUB_PATH and GITHUB_STEP_SUMMARY files; ``if:`` and
  ``${{ }}`` evaluated from the outputs the steps wrote; the ``uses:`` steps provided: the
  checkouts as copies, setup-python as this Python), on this kernel and again under a seccomp
  filter through which no userfaultfd opens.
- docs/nfd-daemonset.yaml: the image's RUN line, then the container's command writing into a
  temporary features.d.
- docs/ansible-facts.yml: ansible-playbook against localhost, twice (slow: ansible-core is
  installed once per version under /var/lib/uffdctl-kernels/ansible-venv).
- every doc installs uffdctl from its repository, none from an index.

pip runs offline, from a wheel directory fetched once (the build requirements, uffdctl's
dependencies and pytest) under /var/lib/uffdctl-kernels/wheels.  Root only: the runner's
sudo, the DaemonSet's privileged container and Ansible's become are root.
"""

from __future__ import annotations

import ast
import datetime as dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import seccomp
import yaml
from conftest import IS_ROOT, ROOT

from uffdctl import abi, memtypes
from uffdctl import hugepages as hp

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="the recipes run as root (sudo, a "
                                "privileged container, Ansible's become)")

DOCS = ROOT / "docs"
CACHE = Path(os.environ.get("UFFDCTL_KERNEL_CACHE", "/var/lib/uffdctl-kernels"))
ANSIBLE_CORE = "ansible-core==2.19.14"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_PYTHON = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
NR_HUGEPAGES = Path("/proc/sys/vm/nr_hugepages")
NFD_PREFIX = "uffd.feature.node.kubernetes.io/"

# The documented keys (uffdctl-probe(1), --format), spelt out here from the ABI tables rather
# than taken from the renderer under test.
BASE_KEYS = ["userfaultfd", "kernel_faults", "user_mode_faults", "method", "kernel", "reason"]
CAPABILITY_KEYS = [
    *BASE_KEYS,
    *(f"feature_{f.key}" for f in abi.FEATURES),
    *(f"cell_{re.sub(r'[^a-z0-9]+', '_', f'{mode}_{mt.name}')}"
      for mt in memtypes.MEMORY_TYPES for mode in abi.MATRIX_MODES),
    *(f"ioctl_{i.key}" for i in abi.RESOLVING_IOCTLS),
]
CAPACITY_KEYS = ["capacity_hugepages_free_2m", "capacity_hugepages_total_2m",
                 "capacity_demo_minor_hugetlb"]
METHODS = {"syscall", "dev_userfaultfd", "syscall_user_mode_only", "none"}


# ----- shared: a copy of the repository, pip offline, the host's huge pages -------------------

def clean_copy(dest: Path) -> Path:
    """The repository as a fresh clone of it would be, with the working tree's changes: the
    files git tracks or would track (no build/, *.egg-info, caches)."""
    res = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others",
                          "--exclude-standard"], capture_output=True)
    if res.returncode != 0:  # not a git checkout (an unpacked sdist)
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
        return dest
    for name in res.stdout.decode().split("\0"):
        src = ROOT / name
        if name and src.is_file():  # a tracked file deleted in the working tree is gone here
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.fixture(scope="session")
def wheelhouse() -> Path:
    """Wheels of everything the recipes' pip commands fetch (uffdctl's build requirements and
    dependencies, and pytest), downloaded once from PyPI: with them every recipe installs
    offline (:func:`offline_pip`)."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    lists = re.findall(r"^(?:requires|dependencies) = (\[.*\])$", pyproject, re.M)
    assert len(lists) == 2, lists
    reqs = sorted({*(r for text in lists for r in ast.literal_eval(text)), "pytest"})
    key = hashlib.sha256(f"{sys.version_info[:2]} {reqs}".encode()).hexdigest()[:12]
    where = CACHE / "wheels" / f"recipes-{key}"
    stamp = where / ".uffdctl-stamp"
    with _locked(CACHE / "wheels" / ".lock"):
        if not stamp.exists():
            shutil.rmtree(where, ignore_errors=True)
            res = subprocess.run([sys.executable, "-m", "pip", "download", "-q",
                                  "--disable-pip-version-check", "--only-binary=:all:",
                                  "-d", str(where), *reqs],
                                 capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, f"pip download {reqs}: {res.stderr}"
            stamp.write_text(" ".join(reqs))
    return where


def offline_pip(wheelhouse: Path) -> dict[str, str]:
    """The environment in which pip installs from ``wheelhouse`` only (no index, no pip.conf
    of this machine)."""
    return {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse),
            "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@contextmanager
def hugepages_put_back() -> Iterator[int]:
    """The recipes reserve huge pages and give them back themselves; should one stop half-way,
    the pool is put back here (under uffdctl's huge page lock), as the suite expects."""
    with hp.exclusive():
        before = int(NR_HUGEPAGES.read_text())
    try:
        yield before
    finally:
        with hp.exclusive():
            if int(NR_HUGEPAGES.read_text()) != before:
                NR_HUGEPAGES.write_text(str(before))


def github_outputs(*args: str) -> dict[str, str]:
    """`uffdctl probe --format github ARGS` from this checkout, as a dict."""
    res = subprocess.run([sys.executable, "-m", "uffdctl", "probe", "--format", "github", *args],
                         capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if k != "GITHUB_OUTPUT"})
    assert res.returncode == 0, res.stderr
    return dict(line.split("=", 1) for line in res.stdout.splitlines())


# ----- GitHub Actions: a runner for one job ------------------------------------------------------

class Expr:
    """GitHub Actions expressions, the part workflows use for gating: literals, contexts
    (steps.ID.outputs.NAME, steps.ID.outcome, env.NAME), ! == != && || ( ), and the status
    functions success() always() failure() cancelled()."""

    TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>-?\d+(?:\.\d+)?)"
                       r"|(?P<op>==|!=|&&|\|\||[!()])|(?P<name>[A-Za-z_][\w.-]*(?:\(\))?))")

    def __init__(self, text: str, contexts: dict[str, Any], failed: bool) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos, text = 0, text.strip()
        while pos < len(text):
            m = self.TOKEN.match(text, pos)
            assert m and m.lastgroup, f"cannot read the expression at {text[pos:]!r}"
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.contexts, self.failed, self.i = contexts, failed, 0

    @staticmethod
    def status_checked(text: str) -> bool:
        return bool(re.search(r"\b(success|always|failure|cancelled)\(\)", text))

    def value(self) -> Any:
        v = self._or()
        assert self.i == len(self.tokens), f"trailing tokens: {self.tokens[self.i:]}"
        return v

    def _peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def _or(self) -> Any:
        v = self._and()
        while self._peek() == "||":
            self.i += 1
            rhs = self._and()
            v = v if truthy(v) else rhs
        return v

    def _and(self) -> Any:
        v = self._eq()
        while self._peek() == "&&":
            self.i += 1
            rhs = self._eq()
            v = rhs if truthy(v) else v
        return v

    def _eq(self) -> Any:
        v = self._unary()
        if self._peek() in ("==", "!="):
            op = self.tokens[self.i][1]
            self.i += 1
            same = loose_equal(v, self._unary())
            return same if op == "==" else not same
        return v

    def _unary(self) -> Any:
        if self._peek() == "!":
            self.i += 1
            return not truthy(self._unary())
        if self._peek() == "(":
            self.i += 1
            v = self._or()
            assert self._peek() == ")", "unbalanced parentheses"
            self.i += 1
            return v
        kind, tok = self.tokens[self.i]
        self.i += 1
        if kind == "str":
            return tok[1:-1].replace("''", "'")
        if kind == "num":
            return float(tok)
        if tok in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[tok]
        if tok.endswith("()"):
            return {"success()": not self.failed, "failure()": self.failed,
                    "always()": True, "cancelled()": False}[tok]
        node: Any = self.contexts
        parts = tok.split(".")
        assert parts[0] in self.contexts, f"unknown context {parts[0]} in {tok}"
        if parts[0] == "steps":
            assert len(parts) > 1 and parts[1] in node["steps"], f"no step with id {parts[1]}"
        for part in parts:
            node = node.get(part) if isinstance(node, dict) else None
        return node


def truthy(v: Any) -> bool:
    return v not in (None, False, 0, 0.0, "")


def loose_equal(a: Any, b: Any) -> bool:
    """==: strings ignoring case; values of different types compared as numbers."""
    if isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    if type(a) is type(b):
        return bool(a == b)

    def num(v: Any) -> float:
        if v is None:
            return 0.0
        if isinstance(v, bool):
            return float(v)
        try:
            return float(v.strip() or 0) if isinstance(v, str) else float(v)
        except ValueError:
            return float("nan")
    return num(a) == num(b)


def as_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def parse_key_values(text: str) -> dict[str, str]:
    """A GITHUB_OUTPUT or GITHUB_ENV file: NAME=value lines and NAME<<DELIMITER blocks."""
    out: dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        m = re.match(r"^([^=<]+)<<(.+)$", line)
        if m:
            end = lines.index(m.group(2), i)
            out[m.group(1)] = "\n".join(lines[i:end])
            i = end + 1
            continue
        assert "=" in line, f"not NAME=value: {line!r}"
        name, value = line.split("=", 1)
        out[name] = value
    return out


SUDO_SHIM = r"""#!/bin/bash
# sudo for a runner user that is root already: the command gets what sudo gives it on
# GitHub's Ubuntu runners (env_reset, secure_path, --preserve-env=LIST), nothing more.
set -euo pipefail
keep=(HOME=/root USER=root LOGNAME=root SHELL=/bin/bash
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin)
for v in TERM LANG LC_ALL; do
  if [ -n "${!v+x}" ]; then keep+=("$v=${!v}"); fi
done
while [ $# -gt 0 ]; do
  case $1 in
    --preserve-env=*)
      IFS=, read -ra names <<<"${1#*=}"
      for n in "${names[@]}"; do
        if [ -n "${!n+x}" ]; then keep+=("$n=${!n}"); fi
      done ;;
    -n|-H) ;;
    --) shift; break ;;
    -*) echo "sudo (test shim): unsupported option $1" >&2; exit 1 ;;
    *) break ;;
  esac
  shift
done
if [ $# -eq 0 ]; then echo "usage: sudo COMMAND" >&2; exit 1; fi
exec env -i "${keep[@]}" "$@"
"""


@dataclass
class Step:
    label: str
    ran: bool = False
    rc: int | None = None
    stdout: str = ""
    stderr: str = ""
    outputs: dict[str, str] = field(default_factory=dict)


class Runner:
    """One job of a workflow on this machine: the directories of a runner under ``base``
    (the workspace, RUNNER_TEMP, HOME), a fresh GITHUB_OUTPUT per step, PATH and env carried
    from step to step through GITHUB_PATH and GITHUB_ENV as the runner does."""

    def __init__(self, base: Path, checkout: Callable[[dict[str, Any], Path], None],
                 env: dict[str, str], wrap: list[str] | None = None) -> None:
        self.workspace, self.temp, self.home = base / "work", base / "temp", base / "home"
        for d in (self.workspace, self.temp, self.home, base / "bin", base / "python"):
            d.mkdir(parents=True)
        sudo = base / "bin" / "sudo"
        sudo.write_text(SUDO_SHIM)
        sudo.chmod(0o755)
        self.python_dir = base / "python"
        self.checkout, self.wrap = checkout, wrap or []
        self.path = [str(base / "bin"), SYSTEM_PATH]
        self.env: dict[str, str] = dict(env)  # the workflow's, the job's, GITHUB_ENV's
        self.summary = self.temp / "step_summary.md"
        self.steps: dict[str, Step] = {}
        self.order: list[Step] = []

    def _contexts(self) -> dict[str, Any]:
        return {"steps": {k: {"outputs": s.outputs, "outcome": self._outcome(s),
                              "conclusion": self._outcome(s)} for k, s in self.steps.items()},
                "env": self.env, "runner": {"temp": str(self.temp), "os": "Linux"},
                "github": {"workspace": str(self.workspace)}}

    @staticmethod
    def _outcome(s: Step) -> str:
        return "skipped" if not s.ran else "success" if s.rc == 0 else "failure"

    def _failed(self) -> bool:
        return any(s.ran and s.rc != 0 for s in self.order)

    def evaluate(self, text: str) -> Any:
        return Expr(text, self._contexts(), self._failed()).value()

    def substitute(self, text: str) -> str:
        return re.sub(r"\$\{\{(.*?)\}\}", lambda m: as_text(self.evaluate(m.group(1))), text)

    def should_run(self, condition: Any) -> bool:
        if condition is None:
            return not self._failed()
        text = str(condition).strip()
        text = re.sub(r"^\$\{\{(.*)\}\}$", r"\1", text, flags=re.S).strip()
        if not Expr.status_checked(text):
            text = f"success() && ({text})"
        return truthy(self.evaluate(text))

    def run_job(self, workflow: dict[str, Any], job: str) -> list[Step]:
        self.env = {**{k: str(v) for k, v in (workflow.get("env") or {}).items()}, **self.env}
        spec = workflow["jobs"][job]
        self.env.update({k: str(v) for k, v in (spec.get("env") or {}).items()})
        for i, raw in enumerate(spec["steps"]):
            step = Step(raw.get("id") or raw.get("name") or raw.get("uses") or f"step {i}")
            if "id" in raw:
                self.steps[raw["id"]] = step
            self.order.append(step)
            if not self.should_run(raw.get("if")):
                continue
            step.ran = True
            if "uses" in raw:
                self._uses(raw, step)
            else:
                self._run(raw, step)
        return self.order

    def _uses(self, raw: dict[str, Any], step: Step) -> None:
        action = raw["uses"].split("@")[0]
        with_ = {k: self.substitute(str(v)) for k, v in (raw.get("with") or {}).items()}
        if action == "actions/checkout":
            dest = self.workspace / with_.get("path", "")
            dest.mkdir(parents=True, exist_ok=True)
            self.checkout(with_, dest)
        elif action == "actions/setup-python":
            assert with_.get("python-version"), "setup-python without a version"
            for name in ("python", "python3"):
                link = self.python_dir / name
                if not link.exists():
                    link.symlink_to(BASE_PYTHON)
            self.path.insert(0, str(self.python_dir))
        else:
            raise AssertionError(f"no stand-in for the action {action}")
        step.rc = 0

    def _run(self, raw: dict[str, Any], step: Step) -> None:
        script = self.temp / f"step-{len(self.order)}.sh"
        script.write_text(self.substitute(raw["run"]))
        files = {name: self.temp / f"{name.lower()}-{len(self.order)}"
                 for name in ("GITHUB_OUTPUT", "GITHUB_ENV", "GITHUB_PATH")}
        for f in files.values():
            f.touch()
        env = {"PATH": ":".join(self.path), "HOME": str(self.home), "LANG": "C.UTF-8",
               "CI": "true", "GITHUB_ACTIONS": "true", "RUNNER_OS": "Linux",
               "GITHUB_WORKSPACE": str(self.workspace), "RUNNER_TEMP": str(self.temp),
               "GITHUB_STEP_SUMMARY": str(self.summary), **self.env,
               **{k: self.substitute(str(v)) for k, v in (raw.get("env") or {}).items()},
               **{k: str(v) for k, v in files.items()}}
        cmd = [*self.wrap, "bash", "--noprofile", "--norc", "-e", "-o", "pipefail", str(script)]
        res = subprocess.run(cmd, cwd=self.workspace, env=env, capture_output=True, text=True,
                             timeout=300, stdin=subprocess.DEVNULL)
        step.rc, step.stdout, step.stderr = res.returncode, res.stdout, res.stderr
        step.outputs = parse_key_values(files["GITHUB_OUTPUT"].read_text())
        self.env.update(parse_key_values(files["GITHUB_ENV"].read_text()))
        for line in files["GITHUB_PATH"].read_text().splitlines():
            if line.strip():
                self.path.insert(0, line.strip())


# The project a copied workflow would test: minor faults on hugetlbfs as root (in the huge
# pages the job reserved), on shmem through uffdctl's pytest marker; each test leaves a record
# of who ran it and what it found.
PROJECT = {
    "pytest.ini": """\
[pytest]
addopts = -p no:cacheprovider
markers =
    hugetlb: needs minor faults on hugetlbfs and free huge pages (runs as root)
""",
    "tests/test_project.py": """\
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FREE = Path("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")


def demo(name, *args):
    free = int(FREE.read_text()) if FREE.exists() else None
    res = subprocess.run([sys.executable, "-m", "uffdctl", "demo", "minor", *args],
                         capture_output=True, text=True, timeout=120)
    Path(f"ran-{name}.json").write_text(json.dumps(
        {"euid": os.geteuid(), "python": sys.executable, "free_hugepages": free,
         "rc": res.returncode, "stdout": res.stdout, "stderr": res.stderr}))
    assert res.returncode == 0, res.stderr


@pytest.mark.hugetlb
def test_minor_faults_on_hugetlbfs():
    demo("hugetlb", "--backing", "hugetlb", "--pages", "2")


@pytest.mark.uffd("minor:shmem")
def test_minor_faults_on_shmem():
    demo("shmem", "--backing", "shmem", "--pages", "4")
""",
}


def run_github_workflow(tmp_path: Path, wheelhouse: Path, wrap: list[str] | None = None
                        ) -> tuple[Runner, dict[str, Step]]:
    workflow = yaml.safe_load((DOCS / "github-actions.yml").read_text())
    assert list(workflow["jobs"]) == ["uffd"]
    checkouts: list[dict[str, Any]] = []

    def checkout(with_: dict[str, Any], dest: Path) -> None:
        checkouts.append(with_)
        if "repository" in with_:  # uffdctl's repository: this one, as a fresh clone has it
            assert with_["repository"].endswith("/uffdctl"), with_
            clean_copy(dest)
        else:  # the project's own code
            for name, text in PROJECT.items():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_text(text)

    runner = Runner(tmp_path, checkout, offline_pip(wheelhouse), wrap)
    runner.run_job(workflow, "uffd")
    assert len(checkouts) == 2 and sum("repository" in c for c in checkouts) == 1, checkouts
    return runner, {s.label: s for s in runner.order}


def _report(runner: Runner) -> str:
    """Which steps ran with what status, and the output of those that failed."""
    lines = [f"{s.label}: " + (f"exit {s.rc}" if s.ran else "skipped") for s in runner.order]
    for s in runner.order:
        if s.ran and s.rc:
            lines.append(f"--- {s.label} failed (exit {s.rc}):\n{s.stdout[-1500:]}"
                         f"{s.stderr[-1500:]}")
    return "\n".join(lines)


def _named(steps: dict[str, Step], start: str) -> Step:
    (step,) = [s for label, s in steps.items() if label.startswith(start)]
    return step


def _assert_every_documented_output(outputs: dict[str, str]) -> None:
    missing = [k for k in [*CAPABILITY_KEYS, *CAPACITY_KEYS] if k not in outputs]
    assert not missing, f"outputs not set: {missing}"
    for k in CAPABILITY_KEYS:
        if k not in ("method", "kernel", "reason"):
            assert outputs[k] in ("true", "false"), (k, outputs[k])
    assert outputs["method"] in METHODS
    assert outputs["kernel"] == os.uname().release
    assert outputs["userfaultfd"] == outputs["kernel_faults"]
    for k in ("capacity_hugepages_free_2m", "capacity_hugepages_total_2m"):
        assert re.fullmatch(r"\d+", outputs[k]), (k, outputs[k])
    assert outputs["capacity_demo_minor_hugetlb"] in ("true", "false")


def test_github_workflow_runs_on_this_kernel(tmp_path: Path, wheelhouse: Path) -> None:
    hugepages = int(yaml.safe_load((DOCS / "github-actions.yml").read_text())["env"]["HUGEPAGES"])
    with hugepages_put_back() as before:
        runner, steps = run_github_workflow(tmp_path, wheelhouse)
        after = int(NR_HUGEPAGES.read_text())
    report = _report(runner)
    assert all(s.rc == 0 for s in runner.order if s.ran), report
    assert after == before, f"the job left nr_hugepages at {after} (it was {before})\n{report}"

    # Installed from the checkout, into the job's venv, which later steps found on PATH.
    venv = runner.temp / "venv"
    site = next(venv.glob("lib/python3*/site-packages"))
    assert next(site.glob("uffdctl-*.dist-info")) and (venv / "bin" / "pytest").exists()

    # The probe: every documented output, and what uffdctl says here and now.
    probe = steps["uffd"]
    assert probe.ran and probe.rc == 0, report
    _assert_every_documented_output(probe.outputs)
    assert probe.outputs["userfaultfd"] == "true" and probe.outputs["reason"] == "", report
    here = github_outputs()
    assert {k: probe.outputs[k] for k in CAPABILITY_KEYS} == {k: here[k] for k in CAPABILITY_KEYS}
    # The huge pages were reserved before it ran (capacity), and are free for the tests.
    assert int(probe.outputs["capacity_hugepages_total_2m"]) >= before + hugepages, report
    assert runner.env["HUGEPAGES_BEFORE"] == str(before)
    user = steps["uffd_user"]
    assert user.ran and user.rc == 0, report
    _assert_every_documented_output(user.outputs)

    # The gated steps ran exactly where their output said so, as whom they should.
    hugetlb = _named(steps, "Tests on hugetlbfs")
    shmem = _named(steps, "Tests on shmem")
    why = _named(steps, "Say why")
    assert hugetlb.ran == (probe.outputs["cell_minor_hugetlb"] == "true"), report
    assert shmem.ran == (user.outputs["cell_minor_shmem"] == "true"), report
    assert why.ran == (not hugetlb.ran or not shmem.ran), report
    assert hugetlb.ran or shmem.ran, f"no gated step ran here: nothing was shown\n{report}"
    for name, step in (("hugetlb", hugetlb), ("shmem", shmem)):
        record_file = runner.workspace / f"ran-{name}.json"
        assert record_file.exists() == step.ran, report
        if not step.ran:
            continue
        record = json.loads(record_file.read_text())
        assert record["rc"] == 0 and "result: OK" in record["stdout"], record
        assert record["python"].startswith(str(venv)), record  # the venv's, under sudo too
        assert "1 passed, 1 deselected" in step.stdout, step.stdout
        if name == "hugetlb":  # as root, in the pages reserved before the probe
            assert record["euid"] == 0 and record["free_hugepages"] >= hugepages, record
    assert _named(steps, "Give the huge pages back").ran


def test_github_workflow_without_userfaultfd_sets_every_output_and_says_why(
        tmp_path: Path, wheelhouse: Path) -> None:
    """The whole job under a seccomp filter denying userfaultfd(2) and /dev/userfaultfd's
    USERFAULTFD_IOC_NEW (as a container runtime's profile does): the probe step still
    succeeds with every output, the tests are skipped and the job says why."""
    wrap = seccomp.command("EPERM", [], deny=("userfaultfd", "ioc_new"))
    with hugepages_put_back() as before:
        runner, steps = run_github_workflow(tmp_path, wheelhouse, wrap)
        after = int(NR_HUGEPAGES.read_text())
    report = _report(runner)
    assert all(s.rc == 0 for s in runner.order if s.ran), report
    assert after == before, report
    probe = steps["uffd"]
    assert probe.ran and probe.rc == 0, report
    _assert_every_documented_output(probe.outputs)
    out = probe.outputs
    assert out["userfaultfd"] == out["kernel_faults"] == out["user_mode_faults"] == "false"
    assert out["method"] == "none" and out["reason"], out
    assert all(out[k] == "false" for k in CAPABILITY_KEYS
               if k.startswith(("feature_", "cell_", "ioctl_"))), out
    user = steps["uffd_user"]
    assert user.ran and user.rc == 0, report
    _assert_every_documented_output(user.outputs)
    assert user.outputs["cell_minor_shmem"] == "false" and user.outputs["reason"], user.outputs
    assert not _named(steps, "Tests on hugetlbfs").ran and not _named(steps, "Tests on shmem").ran
    why = _named(steps, "Say why")
    assert why.ran and why.rc == 0, report
    summary = runner.summary.read_text()
    assert "skipped the hugetlbfs tests" in summary and out["reason"] in summary, summary
    assert "skipped the shmem tests" in summary
    assert out["reason"] in why.stdout + why.stderr
    assert not list(runner.workspace.glob("ran-*.json"))


def test_github_workflow_expressions() -> None:
    """The runner's expression reader agrees with GitHub's rules on what the workflow uses."""
    ctx = {"steps": {"uffd": {"outputs": {"cell_minor_hugetlb": "true", "reason": ""}}},
           "env": {"HUGEPAGES_BEFORE": "0"}}

    def ev(text: str, failed: bool = False) -> Any:
        return Expr(text, ctx, failed).value()
    assert ev("steps.uffd.outputs.cell_minor_hugetlb == 'true'") is True
    assert ev("steps.uffd.outputs.cell_minor_hugetlb == 'TRUE'") is True  # case-insensitive
    assert ev("steps.uffd.outputs.nothing == 'true'") is False
    assert ev("steps.uffd.outputs.nothing != 'true'") is True
    assert ev("always() && env.HUGEPAGES_BEFORE != ''") is True
    assert ev("env.UNSET != ''") is False
    assert ev("!(success() && true)", failed=True) is True
    assert ev("steps.uffd.outputs.reason || 'none'") == "none"
    with pytest.raises(AssertionError):
        ev("steps.typo.outputs.x == 'true'")
    assert parse_key_values("a=1\nb<<EOF\nx\ny\nEOF\nc=\n") == {"a": "1", "b": "x\ny", "c": ""}


# ----- NFD: the image and the DaemonSet's command ----------------------------------------------

def _dockerfile() -> list[str]:
    text = (DOCS / "nfd-daemonset.yaml").read_text()
    m = re.search(r"^#\s+.*docker build .*<<'EOF'\n(.*?)^#\s+EOF$", text, re.M | re.S)
    assert m, "no Dockerfile in the comment"
    return [re.sub(r"^#\s{0,3}", "", line) for line in m.group(1).splitlines()]


def test_nfd_daemonset_writes_capability_labels(tmp_path: Path, wheelhouse: Path) -> None:
    doc = yaml.safe_load((DOCS / "nfd-daemonset.yaml").read_text())
    pod = doc["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    (mount,) = container["volumeMounts"]
    (volume,) = pod["volumes"]
    assert volume["name"] == mount["name"]
    assert volume["hostPath"]["path"] == mount["mountPath"] == \
        "/etc/kubernetes/node-feature-discovery/features.d"

    # The image, as its Dockerfile builds it: the checkout COPY'd to /src, the RUN line, ENV.
    image = tmp_path / "image"
    src, opt = image / "src", image / "opt"
    lines = _dockerfile()
    assert lines[0].startswith("FROM python:")
    assert "COPY . /src" in lines
    (run,) = [line[4:] for line in lines if line.startswith("RUN ")]
    assert "pip install" in run and "/src" in run and "uffdctl==" not in run
    clean_copy(src)
    run = re.sub(r"(?<![\w/])/src\b", str(src), run).replace("/opt/", f"{opt}/")
    python = tmp_path / "pybin"
    python.mkdir()
    (python / "python").symlink_to(BASE_PYTHON)
    env = {"PATH": f"{python}:{SYSTEM_PATH}", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           **offline_pip(wheelhouse)}
    res = subprocess.run(["/bin/sh", "-c", run], env=env, capture_output=True, text=True,
                         timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not src.exists()  # the RUN line removes it
    (path_env,) = [line[4:] for line in lines if line.startswith("ENV PATH=")]
    image_path = path_env.split("=", 1)[1].replace("/opt/", f"{opt}/").replace("$PATH",
                                                                                SYSTEM_PATH)

    # The container's command, the volume a temporary directory.
    features_d = tmp_path / "features.d"
    features_d.mkdir()
    command = [*container["command"], *container["args"]]
    assert command[:2] == ["/bin/sh", "-c"] and len(command) == 3
    script = command[2].replace(mount["mountPath"], str(features_d))
    assert "pip" not in script  # the pod installs nothing when it starts
    proc = subprocess.Popen(["/bin/sh", "-c", script], env={"PATH": image_path, "LANG": "C.UTF-8"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    written = features_d / "uffdctl"
    try:
        deadline = time.monotonic() + 120
        while not written.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        assert proc.poll() is None, "the loop ended: " + proc.communicate()[1]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert err == "", err
    assert [p.name for p in features_d.iterdir()] == ["uffdctl"]  # renamed into place
    text = written.read_text()

    (expiry,) = re.findall(r"^# \+expiry-time=(\S+)$", text, re.M)
    expires = dt.datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    left = (expires - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert 7200 - 300 < left <= 7200, expiry
    labels = dict(line.split("=", 1) for line in text.splitlines()
                  if line and not line.startswith("#"))
    assert all(name.startswith(NFD_PREFIX) for name in labels), labels
    names = {name[len(NFD_PREFIX):] for name in labels}
    assert all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", n) for n in names), names
    assert not [n for n in names if "capacity" in n or n.startswith("hugepages")], names
    # Every boolean capability key is a label with the probe's value here.
    here = github_outputs()
    for key in CAPABILITY_KEYS:
        if here[key] in ("true", "false"):
            assert labels.get(NFD_PREFIX + key.replace("_", "-")) == here[key], key
    assert names <= {k.replace("_", "-") for k in CAPABILITY_KEYS} - {"reason"}, names


# ----- Ansible: the playbook against localhost ----------------------------------------------

@pytest.fixture(scope="session")
def ansible_bin() -> Path:
    """ansible-core in a venv of its own, once per version (PyPI)."""
    version = sys.version_info
    venv = CACHE / "ansible-venv" / f"{ANSIBLE_CORE.replace('==', '-')}-py{version[0]}{version[1]}"
    stamp = venv / ".uffdctl-stamp"
    with _locked(CACHE / "ansible-venv" / ".lock"):
        if not stamp.exists():
            shutil.rmtree(venv, ignore_errors=True)
            for cmd in ([BASE_PYTHON, "-m", "venv", str(venv)],
                        [str(venv / "bin" / "pip"), "install", "-q",
                         "--disable-pip-version-check", ANSIBLE_CORE]):
                res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
                assert res.returncode == 0, res.stdout + res.stderr
            stamp.write_text(ANSIBLE_CORE)
    return venv / "bin"


def _recap(out: str) -> dict[str, int]:
    m = re.search(r"^localhost\s+:\s+(.*)$", out, re.M)
    assert m, out
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(1))}


@pytest.mark.slow
def test_ansible_playbook_installs_the_fact_on_localhost(
        tmp_path: Path, wheelhouse: Path, ansible_bin: Path) -> None:
    src = clean_copy(tmp_path / "src")
    for d in ("home", "tmp", "ansible"):
        (tmp_path / d).mkdir()
    (tmp_path / "ansible.cfg").write_text("")
    venv, fact_path = tmp_path / "opt-uffdctl", tmp_path / "facts.d"
    sysctl_d = tmp_path / "sysctl.d"
    sysctl_d.mkdir()
    # A login's PATH: interpreter discovery finds the host's /usr/bin/python3, as on a stock
    # Debian host.
    env = {"PATH": SYSTEM_PATH, "HOME": str(tmp_path / "home"), "LANG": "C.UTF-8",
           "TMPDIR": str(tmp_path / "tmp"), "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
           "ANSIBLE_HOME": str(tmp_path / "ansible"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible" / "tmp"),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible" / "remote"),
           **offline_pip(wheelhouse)}
    inventory = ["-i", "localhost,", "-c", "local"]

    def playbook(extra: dict[str, Any]) -> tuple[str, dict[str, int]]:
        res = subprocess.run([str(ansible_bin / "ansible-playbook"), *inventory,
                              str(src / "docs" / "ansible-facts.yml"), "-e", json.dumps(extra)],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout + res.stderr
        recap = _recap(res.stdout)
        assert recap["failed"] == 0 and recap["unreachable"] == 0, res.stdout
        return res.stdout, recap

    with hugepages_put_back() as before:
        # Grow the pool by 2 pages where the kernel can use them (then put back).
        want = before + 2
        extra = {"uffdctl_venv": str(venv), "uffd_fact_path": str(fact_path),
                 "uffd_sysctl_d": str(sysctl_d), "uffd_hugepages": want}
        out, _ = playbook(extra)
        grown = int(NR_HUGEPAGES.read_text())
        # Again, with the wheel given (as one built beforehand): the same wheel, nothing to do.
        (built,) = venv.glob("uffdctl-*.whl")
        given = tmp_path / "dist" / built.name
        given.parent.mkdir()
        shutil.copy(built, given)
        again, recap_again = playbook({**extra, "uffdctl_wheel": str(given)})
    assert recap_again["changed"] == 0, again
    assert re.search(r"TASK \[Build the wheel\] \**\nskipping: \[localhost\]", again), again

    # The fact, executable, calling the venv's uffdctl.
    fact = fact_path / "uffd.fact"
    assert stat.S_IMODE(fact.stat().st_mode) == 0o755
    assert fact.read_text() == f"#!/bin/sh\nexec {venv}/bin/uffdctl probe --format facts\n"
    assert (venv / "bin" / "uffdctl").exists() and "uffdctl probe --format facts" in \
        (DOCS / "ansible-facts.yml").read_text()

    # What Ansible reads from it: every documented key, with the probe's values.
    res = subprocess.run([str(ansible_bin / "ansible"), "localhost", *inventory, "-o", "-m",
                          "ansible.builtin.setup", "-a",
                          f"filter=ansible_local fact_path={fact_path}"],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    facts = json.loads(res.stdout.split("=>", 1)[1])["ansible_facts"]["ansible_local"]["uffd"]
    missing = [k for k in [*CAPABILITY_KEYS, *CAPACITY_KEYS] if k not in facts]
    assert not missing, f"facts without {missing}"
    here = github_outputs()
    for key in CAPABILITY_KEYS:
        value = facts[key]
        assert (as_text(value) if isinstance(value, bool) else str(value)) == here[key], key
    assert isinstance(facts["capacity_hugepages_free_2m"], int)
    assert isinstance(facts["userfaultfd"], bool) and facts["userfaultfd"] is True

    # The tasks that use them: the report, and the pool grown where the kernel can use it.
    assert "What each host can do" in out, out
    assert f"minor faults on shmem {facts['cell_minor_shmem']}," in out, out
    if facts["cell_minor_hugetlb"]:
        assert (sysctl_d / "80-uffd-hugepages.conf").read_text() == f"vm.nr_hugepages = {want}\n"
        assert grown == want, out
    else:
        assert grown == before and not list(sysctl_d.iterdir()), out


# ----- every recipe installs from the repository ----------------------------------------------

RECIPES = [DOCS / "github-actions.yml", DOCS / "ansible-facts.yml", DOCS / "nfd-daemonset.yaml",
           DOCS / "node-exporter.md", ROOT / "README.md"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_no_recipe_installs_uffdctl_from_an_index(path: Path) -> None:
    text = path.read_text()
    # `pip install uffdctl`, `pip install "uffdctl>=0.1"`, pipx install uffdctl, git+URL.
    assert not re.search(r"(pip3?|pipx)\s+install\s+(-\S+\s+)*[\"']?uffdctl\b(?![\w./-]*/)", text)
    assert "git+http" not in text


def test_recipes_install_the_same_way() -> None:
    """One layout everywhere: a venv of its own at /opt/uffdctl on a host (node_exporter,
    Ansible, the image), built from a checkout (a wheel: pip wheel --no-deps)."""
    node_exporter = (DOCS / "node-exporter.md").read_text()
    ansible = yaml.safe_load((DOCS / "ansible-facts.yml").read_text())
    nfd = "\n".join(_dockerfile())
    assert "python3 -m venv /opt/uffdctl" in node_exporter
    assert "pip wheel --no-deps" in node_exporter
    assert ansible[0]["vars"]["uffdctl_venv"] == "/opt/uffdctl"
    assert "python -m venv /opt/uffdctl" in nfd and "/opt/uffdctl/bin/pip install" in nfd
    ansible_text = (DOCS / "ansible-facts.yml").read_text()
    assert "pip, wheel" in ansible_text and "--no-deps" in ansible_text
