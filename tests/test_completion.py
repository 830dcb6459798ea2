"""Shell completion of values: --require names, profile names, and pids holding a
userfaultfd (uffdctl.completion), through click's real protocol (_UFFDCTL_COMPLETE)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
from conftest import ROOT

from uffdctl import abi, memtypes, profiles, require


def _complete(run_cli: Callable[..., subprocess.CompletedProcess[str]], words: str,
              shell: str = "bash") -> list[tuple[str, str]]:
    """(value, help) of each completion click offers for the command line ``words`` (the last
    word is the one being completed; a trailing space starts a new one)."""
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    res = run_cli(env={"_UFFDCTL_COMPLETE": f"{shell}_complete", "COMP_WORDS": words,
                       "COMP_CWORD": str(cword)})
    assert res.returncode == 0, res.stderr
    if shell == "bash":  # "type,value" per line, no help
        return [(line.split(",", 1)[1], "") for line in res.stdout.splitlines() if line]
    lines = res.stdout.splitlines()  # zsh: type, value, help ("_" for none) per item
    return [(lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3)]


def _values(run_cli: Callable[..., subprocess.CompletedProcess[str]], words: str) -> list[str]:
    return [v for v, _ in _complete(run_cli, words)]


def test_require_completes_features_cells_ioctls_and_the_rest(run_cli) -> None:  # type: ignore[no-untyped-def]
    memories = [mt.name for mt in memtypes.MEMORY_TYPES]
    # Features by their key (abi.FEATURES), then the cells and ioctls sharing the prefix.
    assert _values(run_cli, "uffdctl probe --require minor_") == [
        f.key for f in abi.FEATURES if f.key.startswith("minor_")]
    assert _values(run_cli, "uffdctl probe --require wp_") == [
        f.key for f in abi.FEATURES if f.key.startswith("wp_")]
    mins = _values(run_cli, "uffdctl probe --require min")
    assert mins[:2] == ["minor_hugetlbfs", "minor_shmem"]
    assert mins[2:] == [f"minor:{m}" for m in memories]
    # A cell: MODE: gives every memory type (memtypes.MEMORY_TYPES).
    assert _values(run_cli, "uffdctl probe --require minor:") == [f"minor:{m}" for m in memories]
    assert _values(run_cli, "uffdctl probe --require missing+wp:sh") == [
        "missing+wp:shmem", "missing+wp:shmem-private"]
    # Ioctls, alone and on a memory type (range ioctls only).
    assert _values(run_cli, "uffdctl probe --require cont") == [
        "continue", *[f"continue:{m}" for m in memories]]
    assert _values(run_cli, "uffdctl probe -r move:h") == ["move:hugetlb", "move:hugetlb-private"]
    assert _values(run_cli, "uffdctl probe --require regi") == ["register"]
    assert _values(run_cli, "uffdctl probe --require UFFDIO_CO") == ["UFFDIO_COPY",
                                                                     "UFFDIO_CONTINUE"]
    assert _values(run_cli, "uffdctl probe --require uffd_feature_minor") == [
        "UFFD_FEATURE_MINOR_HUGETLBFS", "UFFD_FEATURE_MINOR_SHMEM"]
    # What the language adds: kernel-faults, method=NAME, the comparisons.
    assert _values(run_cli, "uffdctl probe --require kernel") == ["kernel-faults", "kernel>="]
    assert _values(run_cli, "uffdctl probe --require method=") == [
        f"method={require.method_fact(m.name)}" for m in abi.OPEN_METHODS]
    hp = _values(run_cli, "uffdctl probe --require hugepages")
    assert hp[0] == "hugepages>=" and all(h.startswith("hugepages:") and h.endswith("kB>=")
                                          for h in hp[1:])
    # The qualifier, once a capability is whole; nothing for one that takes none.
    assert _values(run_cli, "uffdctl probe --require minor:shmem@") == ["minor:shmem@user-mode"]
    assert "minor:shmem@user-mode" in _values(run_cli, "uffdctl probe --require minor:shmem")
    assert _values(run_cli, "uffdctl probe --require kernel-faults@") == []
    # In a list, the last name is completed and the others kept.
    assert _values(run_cli, "uffdctl probe --require minor:hugetlb,thread") == [
        "minor:hugetlb,thread_id"]
    # No name starts so: names that contain it.
    assert _values(run_cli, "uffdctl probe --require hugetlbfs") == [
        f.key for f in abi.FEATURES if "hugetlbfs" in f.key]
    # Every name offered is one the language accepts.
    for name in _values(run_cli, "uffdctl probe --require "):
        if not name.endswith(">="):
            require.parse_requirement(name)


def test_require_profile_completes_profile_names_with_their_description(run_cli) -> None:  # type: ignore[no-untyped-def]
    got = _complete(run_cli, "uffdctl probe -P qemu-", shell="zsh")
    want = [p for p in profiles.PROFILES if p.name.startswith("qemu-")]
    assert [v for v, _ in got] == [p.name for p in want] and want
    assert [h for _, h in got] == [p.description for p in want]
    assert _values(run_cli, "uffdctl probe --require-profile ") == [
        p.name for p in profiles.PROFILES]


# A process holding a userfaultfd, named with control characters: completion shows the name
# inert.
_HOLDER = textwrap.dedent("""
    import ctypes, sys, time
    from uffdctl import access
    u, _ = access.open_uffd(kernel_faults=False)
    ctypes.CDLL(None).prctl(15, b"uffd\\x1b[31m\\nx", 0, 0, 0)  # PR_SET_NAME
    print("ready", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def holder() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n", (
            proc.stderr.read() if proc.stderr else "")
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.kernel
def test_pids_holding_a_userfaultfd_complete_with_their_inert_name(run_cli, holder) -> None:  # type: ignore[no-untyped-def]
    pid = str(holder.pid)
    got = dict(_complete(run_cli, "uffdctl inspect ", shell="zsh"))
    assert got.get(pid) == "uffd\\x1b[31m\\x0ax", got
    assert pid in _values(run_cli, f"uffdctl inspect {pid[:-1]}")
    assert pid in _values(run_cli, "uffdctl probe --pid ")
    assert pid in _values(run_cli, f"uffdctl probe -p {pid}")
    # Only holders: this test's own process holds none.
    assert str(os.getpid()) not in got
