"""The requirement language and the consumer profiles.

- The parser: every form, the spellings each accepts, and malformed expressions with their
  one-line messages (property tests: any text parses or raises RequirementError, never
  anything else, and comparisons round-trip).
- Requirements checked against a real probe of this machine (probe.run_probe), each expected
  verdict derived from the report's own data by an oracle written here against the JSON
  document, and cross-checked with the kernel's own answers (a handshake made here, the
  release from uname).
- Every profile evaluated on the running kernel the same way (marked `kernel`: they run in
  each kernel of tools/kernel-matrix), every requirement with a citation that the man page
  names (file and function).
- `probe --require-profile` and `--list-profiles` through the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
from conftest import ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from uffdctl import abi, memtypes, probe, profiles, require, uffd
from uffdctl.hugepages import Reservation
from uffdctl.render import documents

Run = Callable[..., subprocess.CompletedProcess[str]]
MAN = ROOT / "man" / "uffdctl-probe.1"
RANGE_IOCTLS = [i.key for i in abi.IOCTLS if i.range_ioctl]
MEMORIES = [m.name for m in memtypes.MEMORY_TYPES]


# ----- the parser ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,kind,key", [
    # The forms that existed before stay as they were.
    ("minor_hugetlbfs", "feature", "minor_hugetlbfs"),
    ("UFFD_FEATURE_MINOR_SHMEM", "feature", "minor_shmem"),
    ("bit_20", "feature", "bit_20"),
    ("minor:hugetlb", "cell", "minor:hugetlb"),
    ("hugetlb:minor", "cell", "minor:hugetlb"),
    ("missing+wp:shmem-private", "cell", "missing+wp:shmem-private"),
    ("continue", "ioctl", "continue"),
    ("UFFDIO_COPY", "ioctl", "copy"),
    # An ioctl on a memory type, either way round, in any spelling of the ioctl.
    ("move:shmem", "ioctl-memory", "move:shmem"),
    ("shmem:move", "ioctl-memory", "move:shmem"),
    ("UFFDIO_ZEROPAGE:hugetlb", "ioctl-memory", "zeropage:hugetlb"),
    ("Continue:Shmem-Private", "ioctl-memory", "continue:shmem-private"),
    # Kernel-mode faults, the method.
    ("kernel-faults", "kernel-faults", "kernel-faults"),
    ("kernel_faults", "kernel-faults", "kernel-faults"),
    ("method=dev_userfaultfd", "method", "/dev/userfaultfd"),
    ("method=/dev/userfaultfd", "method", "/dev/userfaultfd"),
    ("method==syscall", "method", "syscall"),
    ("method=syscall_user_mode_only", "method", "syscall+user-mode-only"),
    ("method=syscall+user-mode-only", "method", "syscall+user-mode-only"),
    # Kernel releases, every operator, spaces allowed.
    ("kernel>=5.13", "kernel", "kernel>=5.13"),
    ("kernel<6.1", "kernel", "kernel<6.1"),
    ("kernel==6.12", "kernel", "kernel==6.12"),
    ("kernel != 5.10", "kernel", "kernel!=5.10"),
    ("kernel>v6.1", "kernel", "kernel>6.1"),
    ("KERNEL<=4.19", "kernel", "kernel<=4.19"),
    # Free huge pages, of a size or of the default size.
    ("hugepages:2M>=64", "hugepages", "hugepages:2048kB>=64"),
    ("hugepages:2048kB>=64", "hugepages", "hugepages:2048kB>=64"),
    ("hugepages:1G > 0", "hugepages", "hugepages:1048576kB>0"),
    ("hugepages:2MiB==3", "hugepages", "hugepages:2048kB==3"),
    ("hugepages>=16", "hugepages", "hugepages>=16"),
])
def test_every_form_parses(text: str, kind: str, key: str) -> None:
    req = require.parse_requirement(text)
    assert (req.kind, req.key, req.text) == (kind, key, text)
    assert req.capability is (kind in require.CAPABILITY_KINDS)
    assert req.capacity is (kind == "hugepages")


def test_what_needs_kernel_mode_faults() -> None:
    def needs(text: str) -> bool:
        return require.parse_requirement(text).needs_kernel_faults

    assert needs("move:shmem") and not needs("move:shmem@user-mode")
    assert needs("kernel-faults") and needs("method=syscall") and needs("method=dev_userfaultfd")
    assert not needs("method=syscall_user_mode_only")
    assert not needs("kernel>=5.13") and not needs("hugepages>=1")


def test_comparison_values() -> None:
    k = require.parse_requirement("kernel >= 5.13")
    assert (k.op, k.value, k.size_kb) == (">=", (5, 13), 0)
    h = require.parse_requirement("hugepages:1G<4")
    assert (h.op, h.value, h.size_kb) == ("<", (4,), 1 << 20)
    d = require.parse_requirement("hugepages!=0")
    assert (d.op, d.value, d.size_kb) == ("!=", (0,), 0)


@pytest.mark.parametrize("text,message", [
    ("", "empty requirement; expected a feature (minor_hugetlbfs)"),
    ("   ", "empty requirement"),
    ("kernel", "'kernel' needs a comparison, as in kernel>=5.13"),
    ("kernel>=5", "expected MAJOR.MINOR after >=; did you mean kernel>=5.0?"),
    ("kernel=6.12", "unknown operator '=' in 'kernel=6.12'; expected one of >=, >, <=, <, ==, "
                    "!=; did you mean kernel==6.12?"),
    ("kernel=>5.13", "did you mean kernel>=5.13?"),
    ("kernel<>5.10", "did you mean kernel!=5.10?"),
    ("kernel>=6.1.55", "compare on MAJOR.MINOR only"),
    ("kernel>=6.1.55", "did you mean kernel>=6.1?"),
    ("kernel>=abc", "expected a kernel release MAJOR.MINOR after >=, as in kernel>=5.13"),
    ("kernal>=5.13", "unknown requirement 'kernal>=5.13'; did you mean kernel>=5.13?"),
    ("hugepage:2M>=64", "did you mean hugepages:2M>=64?"),
    ("huge_pages>=3", "did you mean hugepages>=3?"),
    ("hugepages:2X>=4", "huge page size '2X' in 'hugepages:2X>=4' is not a size: expected a "
                        "number with K, M or G"),
    ("hugepages:>=4", "huge page size '' in 'hugepages:>=4' is not a size"),
    ("hugepages:512>=1", "is not a whole number of kB"),
    ("hugepages:2M", "'hugepages:2M' needs a comparison and a number of pages"),
    ("hugepages:2M>=", "expected a whole number of pages after >="),
    ("hugepages:2M>=-1", "expected a whole number of pages after >="),
    ("hugepages:2M>=1.5", "expected a whole number of pages after >="),
    ("hugepages:2M=64", "did you mean hugepages:2M==64?"),
    ("method", "'method' needs the way of opening a userfaultfd: method=syscall, "
               "method=dev_userfaultfd, method=syscall_user_mode_only"),
    ("method=dev", "unknown method 'dev' in 'method=dev'; expected method=syscall, "
                   "method=dev_userfaultfd, method=syscall_user_mode_only; did you mean "
                   "method=dev_userfaultfd?"),
    ("method:syscall", "did you mean method=syscall?"),
    ("method=foo", "unknown method 'foo'"),
    ("method!=syscall", "a method is named with = only, as in method=syscall"),
    ("kernel faults", "did you mean kernel-faults?"),
    ("register:shmem", "UFFDIO_REGISTER in 'register:shmem' is an ioctl of the descriptor, not "
                       "of a registered range"),
    ("move:shmm", "did you mean move:shmem"),
    ("coppy:anon", "did you mean copy:anon"),
    ("minor:shmem>=1", "comparisons go with kernel (kernel>=5.13), hugepages"),
    ("kernel>=5.13@user-mode", "@user-mode in 'kernel>=5.13@user-mode' goes only with "
                               "features, cells and ioctls"),
    ("hugepages>=1@user-mode", "write hugepages>=1"),
    ("kernel-faults@user-mode", "kernel-faults asks for kernel-mode faults itself"),
    ("method=syscall@user-mode", "the method says which faults it handles"),
    ("move:shmem@kernel", "kernel-mode faults are what move:shmem alone asks for"),
    ("move:shmem:user-mode", "did you mean move:shmem@user-mode?"),
    ("xyzzy", "each optionally followed by @user-mode"),
])
def test_malformed_expressions_say_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(require.RequirementError) as exc:
        require.parse_requirement(text)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40))
def test_any_text_parses_or_is_a_requirement_error(text: str) -> None:
    try:
        req = require.parse_requirement(text)
    except require.RequirementError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert req.kind in (*require.CAPABILITY_KINDS, "kernel-faults", "method", "kernel",
                        "hugepages")


_ALPHABET = "kernlhugpaswmtiod:<>=!@-_.0123456789MGK "


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=24))
def test_near_misses_parse_or_are_requirement_errors(text: str) -> None:
    """Text made of the language's own letters: the parser's error paths, not the happy one."""
    try:
        require.parse_requirement(text)
    except require.RequirementError as exc:
        assert "\n" not in str(exc)


@given(st.integers(0, 99), st.integers(0, 999), st.sampled_from(require.COMPARISONS),
       st.sampled_from(["", " ", "  "]))
def test_kernel_comparisons_round_trip(major: int, minor: int, op: str, space: str) -> None:
    req = require.parse_requirement(f"kernel{space}{op}{space}{major}.{minor}")
    assert (req.op, req.value, req.key) == (op, (major, minor), f"kernel{op}{major}.{minor}")


@given(st.sampled_from([("2M", 2048), ("1G", 1 << 20), ("2048K", 2048), ("64kB", 64),
                        ("2097152", 2048)]),
       st.integers(0, 10**6), st.sampled_from(require.COMPARISONS))
def test_hugepages_round_trip(size: tuple[str, int], count: int, op: str) -> None:
    text, kb = size
    req = require.parse_requirement(f"hugepages:{text}{op}{count}")
    assert (req.size_kb, req.op, req.value) == (kb, op, (count,))
    assert req.key == f"hugepages:{kb}kB{op}{count}"


# ----- an oracle over the probe's JSON document -----------------------------------------------

def _release_tuple(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _cmp(left: tuple[int, ...], op: str, right: tuple[int, ...]) -> bool:
    return {">=": left >= right, ">": left > right, "<=": left <= right, "<": left < right,
            "==": left == right, "!=": left != right}[op]


def expected(doc: dict[str, Any], req: require.Requirement) -> bool:
    """Should ``req`` be met, by the document's own data alone (written apart from
    uffdctl.require, from the JSON contract in uffdctl-probe(1))."""
    if req.kind == "kernel":
        return _cmp(_release_tuple(doc["kernel"]["release"]), req.op, req.value)
    if req.kind == "hugepages":
        pools = doc["hugepages"]
        kb = req.size_kb or pools["default_size_kb"]
        pool = next((p for p in pools["pools"] if p["size_kb"] == kb), None)
        return pool is not None and _cmp((max(0, pool["free"] - pool["reserved"]),), req.op,
                                         req.value)
    if req.kind == "method":
        return any(m["name"] == req.key and m["ok"] for m in doc["access"]["methods"])
    api = doc["api"]
    if api is None:
        return False
    if req.kind == "kernel-faults":
        return bool(api["kernel_faults"])
    if not (api["kernel_faults"] or req.user_mode):
        return False
    matrix = doc["matrix"]
    if req.kind == "feature":
        return any(f["name"] == req.key and f["offered"] and f["usable"]
                   for f in api["features"])
    if req.kind == "cell":
        mode, memory = req.key.split(":")
        return any(c["ok"] for c in matrix if (c["mode"], c["memory"]) == (mode, memory))

    def works(c: dict[str, Any], key: str) -> bool:
        return (c["ok"] and key in c["ioctls"] and key not in c["failing_ioctls"]
                and key not in c["untested_ioctls"])

    if req.kind == "ioctl-memory":
        key, memory = req.key.split(":")
        return any(works(c, key) for c in matrix if c["memory"] == memory)
    if not abi.IOCTL_BY_KEY[req.key].range_ioctl:
        return req.key == "register" or bool(api["ioctls_mask"] & abi.IOCTL_BY_KEY[req.key].mask)
    return any(works(c, req.key) for c in matrix)


def _own_offered() -> int:
    """The features this kernel offers, from a handshake of this test's own."""
    with uffd.Userfaultfd.open() as u:
        return u.api(0)[0]


@pytest.fixture(scope="module")
def report() -> probe.ProbeReport:
    return probe.run_probe()


def _all_expressions(rep: probe.ProbeReport) -> list[str]:
    """One of each kind, over every name the matrix has, and comparisons either side of this
    kernel and of the pools."""
    have = _release_tuple(rep.kernel.release)
    out = [f.key for f in abi.FEATURES] + [i.key for i in abi.IOCTLS]
    out += [f"{mode}:{m}" for mode in abi.MATRIX_MODES for m in MEMORIES]
    out += [f"{i}:{m}" for i in RANGE_IOCTLS for m in MEMORIES]
    out += ["kernel-faults"] + [f"method={require.method_fact(m.name)}" for m in abi.OPEN_METHODS]
    for major, minor in {have, (have[0], have[1] + 1), (have[0], max(0, have[1] - 1)),
                         (have[0] + 1, 0), (max(0, have[0] - 1), 0)}:
        out += [f"kernel{op}{major}.{minor}" for op in require.COMPARISONS]
    for pool in rep.hugepages.pools:
        for n in {0, pool.available, pool.available + 1}:
            out += [f"hugepages:{pool.size_kb}kB{op}{n}" for op in require.COMPARISONS]
    out += ["hugepages>=0", "hugepages>=1000000", "hugepages:4096kB>=0"]
    return out


@pytest.mark.kernel
def test_every_requirement_against_a_real_probe(report: probe.ProbeReport) -> None:
    doc = documents.probe_json(report)
    reqs = [require.parse_requirement(t) for t in _all_expressions(report)]
    results = require.check_requirements(report, reqs)
    assert [r.requirement for r in results] == reqs
    for r in results:
        assert r.met is expected(doc, r.requirement), (r.requirement.text, r.reason)
        assert r.reason and "\n" not in r.reason, r


@pytest.mark.kernel
def test_reasons_name_what_the_report_says(report: probe.ProbeReport) -> None:
    def check(text: str) -> require.RequirementResult:
        (result,) = require.check_requirements(report, [require.parse_requirement(text)])
        return result

    assert report.api is not None and report.api.kernel_faults  # as root: the syscall opens
    # Listed but failing: the errno; listed but not tried: says so, with the fix.
    for cell in report.matrix:
        for key, err in cell.failing_ioctls.items():
            r = check(f"{key}:{cell.memory}")
            if not r.met:
                assert "fails when tried" in r.reason and err in r.reason, r.reason
        for key in cell.untested_ioctls:
            r = check(f"{key}:{cell.memory}")
            if not r.met:
                assert "not tried" in r.reason and "capacity" in r.reason, r.reason
    # MOVE on shmem: listed wherever the kernel has it (UFFD_API_RANGE_IOCTLS), never working.
    move = check("move:shmem")
    assert not move.met
    if any("move" in c.ioctls for c in report.matrix if c.memory == "shmem"):
        assert "EINVAL" in move.reason
    # The release, in the kernel's own words.
    release = os.uname().release
    here = _release_tuple(release)
    assert check(f"kernel=={here[0]}.{here[1]}").met
    newer = check(f"kernel>={here[0]}.{here[1] + 1}")
    assert not newer.met and release in newer.reason and "is false" in newer.reason
    # Capacity is said to be capacity, with the pool's own numbers.
    pool = report.hugepages.pool()
    if pool is not None:
        short = check(f"hugepages>{pool.available}")
        assert not short.met and short.reason.startswith("capacity, read now: ")
        assert f"{pool.available} free {pool.size_kb} kB" in short.reason
        assert "fix: " in short.reason
    missing_size = check("hugepages:4096kB>=0")
    if report.hugepages.pool(4096 * 1024) is None:
        assert "no pool of 4096 kB" in missing_size.reason
    # Each way of opening, as the access section found it.
    for m in report.access.methods:
        r = check(f"method={require.method_fact(m.name)}")
        assert r.met is m.ok and m.name in r.reason


@pytest.mark.kernel
def test_features_agree_with_the_kernels_own_handshake(report: probe.ProbeReport) -> None:
    offered = _own_offered()
    results = require.check_requirements(
        report, [require.parse_requirement(f.key) for f in abi.FEATURES])
    for f, r in zip(abi.FEATURES, results, strict=True):
        # Root: every offered feature is usable when requested alone (EVENT_FORK's
        # CAP_SYS_PTRACE included), so met is exactly "offered".
        assert r.met is bool(offered & f.mask), (f.key, r.reason)


@pytest.mark.kernel
def test_requirements_with_free_huge_pages(hugepages: Callable[..., AbstractContextManager[
        Reservation]]) -> None:
    """With pages reserved the hugetlb ioctls get tried; whatever the pools hold by the time the
    probe reads them (other processes may take pages), the verdicts follow the report."""
    with hugepages(2):
        rep = probe.run_probe()
    doc = documents.probe_json(rep)
    texts = [f"{i}:{m}" for i in RANGE_IOCTLS for m in ("hugetlb", "hugetlb-private")]
    texts += ["hugepages>=1", "hugepages>=2", f"hugepages:{rep.hugepages.default_size_kb}kB>=1"]
    for r in require.check_requirements(rep, [require.parse_requirement(t) for t in texts]):
        assert r.met is expected(doc, r.requirement), (r.requirement.text, r.reason)


# ----- profiles ------------------------------------------------------------------------------

def _man_source() -> str:
    """The page's text as written, escapes undone (\\- is -, \\e is a backslash)."""
    return MAN.read_text().replace("\\-", "-").replace("\\e", "\\")


def _man_section(name: str) -> str:
    text = _man_source()
    return text.split(f".SH {name}\n", 1)[1].split("\n.SH ", 1)[0]


def test_every_profile_requirement_parses_and_has_a_source() -> None:
    assert len(profiles.PROFILES) == len(profiles.PROFILE_BY_NAME)
    for p in profiles.PROFILES:
        assert p.name and p.description and p.requirements, p.name
        assert len({r.expression for r in p.requirements}) == len(p.requirements), p.name
        for req, parsed in zip(p.requirements, p.parsed(), strict=True):
            assert parsed.profile == p.name and parsed.text == f"{p.name}: {req.expression}"
            assert parsed.kind not in ("hugepages",), "capacity is never part of a profile"
            assert req.why and req.cites, (p.name, req.expression)
            for c in req.cites:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+", c.repo), c
                assert c.path and c.symbol and c.does and c.quote, c
                assert "\n" not in c.quote and c.quote.strip() == c.quote, c


def test_the_required_consumers_have_profiles() -> None:
    names = set(profiles.PROFILE_BY_NAME)
    assert {"qemu-postcopy-anon", "qemu-postcopy-shmem", "qemu-postcopy-hugetlbfs",
            "qemu-postcopy-blocktime", "qemu-postcopy-preempt", "firecracker-uffd-anon",
            "firecracker-uffd-hugetlbfs", "criu-lazy-pages"} <= names
    exprs = {p.name: {r.expression for r in p.requirements} for p in profiles.PROFILES}
    # QEMU postcopy is MISSING faults resolved by COPY/ZEROPAGE, never minor faults.
    for name in (n for n in names if n.startswith("qemu-")):
        assert {"kernel-faults", "missing:anon", "copy:anon"} <= exprs[name]
        assert not any(e.startswith("minor") or e.startswith("continue") for e in exprs[name])
    assert "thread_id" in exprs["qemu-postcopy-blocktime"]
    assert {"missing_hugetlbfs", "missing:hugetlb"} <= exprs["qemu-postcopy-hugetlbfs"]
    assert {"missing_shmem", "missing:shmem"} <= exprs["qemu-postcopy-shmem"]
    assert {"event_remove", "copy:anon", "zeropage:anon"} <= exprs["firecracker-uffd-anon"]
    assert {"event_fork", "event_remap", "event_unmap", "event_remove",
            "method=syscall"} <= exprs["criu-lazy-pages"]


def test_the_man_page_lists_every_profile_with_its_citations() -> None:
    section = _man_section("PROFILES")
    for p in profiles.PROFILES:
        assert f".B {p.name}\n" in section, p.name
        body = section.split(f".B {p.name}\n", 1)[1].split("\n.TP\n", 1)[0]
        for r in p.requirements:
            assert r.expression in body, (p.name, r.expression)
            for c in r.cites:
                # Cited somewhere in the section (a citation shared between profiles is
                # written out once, where it first appears).
                assert c.path in section and c.symbol in section, (p.name, c)
                assert c.repo in section, c


def test_the_man_page_documents_the_language() -> None:
    section = _man_section("REQUIREMENTS")
    for form in ("IOCTL:MEMORY", "kernel-faults", "method=METHOD", "kernel OP MAJOR.MINOR",
                 "hugepages[:SIZE] OP COUNT", "dev_userfaultfd", "syscall_user_mode_only"):
        assert form in section, form
    for op in require.COMPARISONS:
        assert op in section
    options = _man_section("OPTIONS")
    assert "--require-profile" in options and "--list-profiles" in options


@pytest.mark.kernel
@pytest.mark.parametrize("name", list(profiles.PROFILE_BY_NAME))
def test_every_profile_on_the_running_kernel(name: str, report: probe.ProbeReport) -> None:
    doc = documents.probe_json(report)
    offered = _own_offered()
    p = profiles.profile(name)
    results = require.check_requirements(report, p.parsed())
    for r in results:
        assert r.met is expected(doc, r.requirement), (r.requirement.text, r.reason)
        if r.requirement.kind == "feature":
            assert r.met is bool(offered & abi.FEATURE_BY_KEY[r.requirement.key].mask)
        if r.requirement.kind == "method":
            assert r.met  # root: the syscall and, from 6.1, the device open
    verdict = all(r.met for r in results)
    assert verdict is all(expected(doc, r) for r in p.parsed())
    # What the kernel itself says about the profiles' foundations, independent of the probe:
    # MISSING on anonymous memory works everywhere userfaultfd does, with COPY and ZEROPAGE.
    base = {r.requirement.text.split(": ", 1)[1]: r.met for r in results}
    for expr in ("missing:anon", "copy:anon", "zeropage:anon"):
        if expr in base:
            assert base[expr], (name, expr)


# ----- the CLI --------------------------------------------------------------------------------

def test_list_profiles(run_cli: Run) -> None:
    res = run_cli("probe", "--list-profiles")
    assert res.returncode == 0 and res.stderr == "", res.stderr
    for p in profiles.PROFILES:
        assert f"{p.name}: {p.description}" in res.stdout
        for r in p.requirements:
            assert f"  {r.expression}  ({r.why})" in res.stdout
            for c in r.cites:
                assert f"{c.repo} {c.path} {c.symbol}: {c.does}" in res.stdout
    res = run_cli("probe", "--list-profiles", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc == profiles.to_json()
    assert [p["name"] for p in doc] == list(profiles.PROFILE_BY_NAME)
    assert all(c["quote"] for p in doc for r in p["requirements"] for c in r["cites"])
    assert run_cli("probe", "--list-profiles", "--format", "json").stdout == res.stdout


@pytest.mark.parametrize("args,message", [
    (("--list-profiles", "-r", "move:anon"), "--list-profiles probes nothing: drop --require"),
    (("--list-profiles", "-P", "criu-lazy-pages"), "drop --require-profile"),
    (("--list-profiles", "--format", "env"), "--list-profiles prints a table, or JSON"),
    (("-P", "qemu-postcopy-hugtlbfs"), "unknown profile 'qemu-postcopy-hugtlbfs'; did you mean "
                                        "qemu-postcopy-hugetlbfs"),
    (("-P", "nothing-like-it"), "the profiles are qemu-postcopy-anon"),
    (("-r", "kernel=6.1"), "did you mean kernel==6.1?"),
    (("-r", "hugepages:2X>=1"), "is not a size"),
])
def test_usage_errors(run_cli: Run, args: tuple[str, ...], message: str) -> None:
    res = run_cli("probe", *args)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr


@pytest.mark.kernel
@pytest.mark.parametrize("name", ["qemu-postcopy-anon", "criu-lazy-pages",
                                  "qemu-postcopy-hugetlbfs"])
def test_require_profile_through_the_cli(run_cli: Run, name: str) -> None:
    res = run_cli("probe", "--json", "-P", name, "-r", "kernel-faults")
    doc = json.loads(res.stdout)
    p = profiles.profile(name)
    got = doc["requirements"]
    assert [r["name"] for r in got] == ["kernel-faults"] + [
        f"{name}: {r.expression}" for r in p.requirements]
    # Each verdict follows the document it came with; the status follows the verdicts.
    for r, req in zip(got, [require.parse_requirement("kernel-faults"), *p.parsed()],
                      strict=True):
        assert (r["kind"], r["key"]) == (req.kind, req.key)
        assert r["met"] is expected(doc, req), r
    unmet = [r for r in got if not r["met"]]
    assert res.returncode == (1 if unmet else 0), res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines == [f"uffdctl: requirement {r['name']} not met: {r['reason']}" for r in unmet]
    # The table and -q say the same with the profile's name on each line.
    quiet = run_cli("probe", "-q", "--require-profile", name)
    assert quiet.stdout == ""
    for line in quiet.stderr.strip().splitlines():
        assert line.startswith(f"uffdctl: requirement {name}: "), line


@pytest.mark.kernel
def test_new_forms_through_the_cli(run_cli: Run) -> None:
    here = _release_tuple(os.uname().release)
    exprs = [f"kernel>={here[0]}.{here[1]}", "kernel-faults", "method=syscall", "move:anon",
             "hugepages>=0"]
    res = run_cli("probe", "--json", *[a for e in exprs for a in ("-r", e)])
    doc = json.loads(res.stdout)
    for r, e in zip(doc["requirements"], exprs, strict=True):
        req = require.parse_requirement(e)
        assert (r["name"], r["met"]) == (e, expected(doc, req)), r
    assert res.returncode == (0 if all(r["met"] for r in doc["requirements"]) else 1)
    older = run_cli("probe", "-q", "-r", f"kernel<{here[0]}.{here[1]}")
    assert older.returncode == 1 and "is false" in older.stderr
