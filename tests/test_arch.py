"""Per-architecture truth: a missing feature is explained by what is really missing.

A feature gated by an architecture's Kconfig symbol (write-protect: HAVE_ARCH_USERFAULTFD_WP,
minor faults: HAVE_ARCH_USERFAULTFD_MINOR) came to each architecture in its own release:
write-protect is 5.7 on x86_64 and 6.10 on arm64 (5b32510af77b).  Debian bookworm's arm64
6.1 offers 0xffe: no PAGEFAULT_FLAG_WP, no WP_HUGETLBFS_SHMEM.  The cause must name arm64's
missing support and the release that brings it there, never "added in 5.7".

Most tests here use plain data: an offered mask, a configuration, a machine and a release
(support.Here), for four kernels: arm64 6.1 without write-protect, arm64 6.12 with it,
x86_64 5.10 and x86_64 6.18.  The demo engine is run in-process with a real userfaultfd whose
UFFDIO_API answer is reduced to the kernel's mask, and nothing else of the kernel faked: each
demo, backing and option whose features are missing is refused (exit 3) before anything is
mapped or registered.  The ``kernel`` test at the end runs the real CLI on whatever kernel
runs it (tools/kernel-matrix runs it on arm64 too).
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from types import SimpleNamespace
from typing import Any, NamedTuple

import pytest
from demo_util import offered_features
from rich.console import Console

from uffdctl import (
    abi,
    access,
    advice,
    demo,
    errors,
    hugepages,
    kconfig,
    memtypes,
    probe,
    pytest_plugin,
    scenarios,
    support,
    uffd,
)
from uffdctl.render import documents
from uffdctl.render import probe as probe_view
from uffdctl.require import check_requirements, parse_requirement

WP = "CONFIG_HAVE_ARCH_USERFAULTFD_WP"
MINOR = "CONFIG_HAVE_ARCH_USERFAULTFD_MINOR"
MARKER = "CONFIG_PTE_MARKER_UFFD_WP"
ARM64_WP_COMMIT = "5b32510af77b"


class Kernel(NamedTuple):
    """A kernel as the decision sees it: where it runs and what UFFDIO_API offered."""

    name: str
    at: support.Here
    offered: int


# What each offered, as seen (userfaultfd-facts.md 11, the issue): the full masks of 5.10,
# 6.12 and 6.18, and arm64 6.1's 0x1fff without bit 0 (PAGEFAULT_FLAG_WP) and bit 12
# (WP_HUGETLBFS_SHMEM).
ARM64_61 = Kernel("arm64 6.1", support.Here(
    "aarch64", "6.1.0-26-arm64", {WP: "n", MINOR: "y", MARKER: "n"},
    "/boot/config-6.1.0-26-arm64"), 0xffe)
ARM64_612 = Kernel("arm64 6.12", support.Here(
    "aarch64", "6.12.117+deb12-arm64", {WP: "y", MINOR: "y", MARKER: "y"},
    "/boot/config-6.12.117+deb12-arm64"), 0x1ffff)
X86_510 = Kernel("x86_64 5.10", support.Here(
    "x86_64", "5.10.0-46-amd64", {WP: "y"}, "/boot/config-5.10.0-46-amd64"), 0x1ff)
X86_618 = Kernel("x86_64 6.18", support.Here(
    "x86_64", "6.18.44", {WP: "y", MINOR: "y", MARKER: "y"}, "/proc/config.gz"), 0x1ffff)
KERNELS = [ARM64_61, ARM64_612, X86_510, X86_618]


def _why(k: Kernel, key: str) -> support.Absence | None:
    return support.absence(key, k.offered, k.at)


# ----- the data ---------------------------------------------------------------------------

def test_every_gate_is_reported_and_cited() -> None:
    assert set(kconfig.SYMBOLS) >= set(abi.KCONFIG_GATE_BY_SYMBOL)
    for feat in abi.FEATURES:
        assert not feat.kconfig or feat.kconfig in abi.KCONFIG_GATE_BY_SYMBOL, feat
    for gate in abi.KCONFIG_GATES:
        assert gate.kind in ("arch", "option", "derived")
        assert not gate.depends_on or gate.depends_on in abi.KCONFIG_GATE_BY_SYMBOL
        assert bool(gate.arches) == (gate.kind == "arch"), gate.symbol
        for where in gate.arches:
            # A release that selects it names the commit; a verified one by its hash.
            assert (where.first is None) == (where.commit == ""), where
            if where.first and where.verified:
                assert re.match(r"[0-9a-f]{12} \"", where.commit), where
            assert where.source


def test_x86_64_is_the_release_column() -> None:
    """The release column of FEATURES is x86_64's: the first release anywhere."""
    for feat in abi.FEATURES:
        assert abi.first_on(feat.key, "x86_64") == feat.first, feat.key


def test_arm64_came_later_to_write_protect() -> None:
    first = {f.key: abi.first_on(f.key, "arm64") for f in abi.FEATURES}
    assert first["pagefault_flag_wp"] == "6.10"
    assert first["wp_hugetlbfs_shmem"] == first["wp_unpopulated"] == first["wp_async"] == "6.10"
    assert first["minor_hugetlbfs"] == "5.13" and first["minor_shmem"] == "5.14"
    assert first["move"] == "6.8" and first["rwp"] == "7.3-rc"
    assert abi.arch_first(WP, "arm64").commit.startswith(ARM64_WP_COMMIT)  # type: ignore[union-attr]
    assert abi.first_on("minor_shmem", "riscv64") == "6.5"
    assert abi.first_on("minor_hugetlbfs", "loongarch64") == "6.9"
    assert abi.first_on("pagefault_flag_wp", "i386") is None  # `if X86_64`
    assert abi.kernel_arch("aarch64") == "arm64" and abi.kernel_arch("x86_64") == "x86_64"


# ----- the decision, on four kernels ----------------------------------------------------------

def test_arm64_61_lacks_write_protect_for_its_architecture() -> None:
    k = ARM64_61
    for key in ("pagefault_flag_wp", "wp_hugetlbfs_shmem", "wp_unpopulated", "wp_async"):
        a = _why(k, key)
        assert a is not None and a.why == support.ARCHITECTURE, key
        assert (a.arch, a.symbol, a.setting, a.arch_first, a.needs) == (
            "arm64", WP, "n", "6.10", "6.10"), a
        assert a.commit.startswith(ARM64_WP_COMMIT)
    assert _why(k, "minor_shmem") is None and _why(k, "minor_hugetlbfs") is None
    poison = _why(k, "poison")
    assert poison is not None and poison.why == support.RELEASE and poison.first == "6.6"
    absent = support.missing(["pagefault_flag_wp", "wp_hugetlbfs_shmem"], k.offered, k.at)
    text = advice.not_offered(absent)
    assert text == (
        "this kernel does not offer PAGEFAULT_FLAG_WP, WP_HUGETLBFS_SHMEM: it has no "
        "userfaultfd write-protect on arm64 (CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set: "
        "arm64 gained it in 6.10, commit 5b32510af77b \"arm64/mm: Add uffd write-protect "
        "support\")"), text
    assert "added in" not in text
    assert advice.absence_fix(absent) == (
        "use a kernel 6.10 or newer, the first with userfaultfd write-protect on arm64")


def test_arm64_61_without_a_readable_configuration() -> None:
    k = ARM64_61._replace(at=ARM64_61.at._replace(config=None, config_source=None))
    a = _why(k, "pagefault_flag_wp")
    assert a is not None and a.why == support.ARCHITECTURE and a.setting is None
    assert "it needs CONFIG_HAVE_ARCH_USERFAULTFD_WP: arm64 gained it in 6.10" in \
        advice.not_offered([a])


def test_arm64_612_has_write_protect() -> None:
    k = ARM64_612
    missing = support.missing([f.key for f in abi.FEATURES], k.offered, k.at)
    assert [(a.key, a.why) for a in missing] == [("rwp", support.RELEASE),
                                                 ("rwp_async", support.RELEASE)]
    assert support.usable_mask(k.offered, k.at) == k.offered


def test_x86_64_510_lacks_what_its_release_lacks() -> None:
    k = X86_510
    assert _why(k, "pagefault_flag_wp") is None
    absent = support.missing(["pagefault_flag_wp", "wp_hugetlbfs_shmem"], k.offered, k.at)
    assert [(a.key, a.why) for a in absent] == [("wp_hugetlbfs_shmem", support.RELEASE)]
    assert advice.not_offered(absent) == \
        "this kernel does not offer WP_HUGETLBFS_SHMEM (added in 5.19)"
    assert advice.absence_fix(absent) == "use a kernel 5.19 or newer"
    minor = support.missing(["minor_shmem"], k.offered, k.at)
    assert advice.not_offered(minor) == "this kernel does not offer MINOR_SHMEM (added in 5.14)"


def test_x86_64_618_lacks_only_the_release_candidates() -> None:
    k = X86_618
    missing = support.missing([f.key for f in abi.FEATURES], k.offered, k.at)
    assert {(a.key, a.why, a.first) for a in missing} == {
        ("rwp", support.RELEASE, "7.3-rc"), ("rwp_async", support.RELEASE, "7.3-rc")}


def test_an_offer_the_kernel_predates_the_filter_of_is_not_believed() -> None:
    """arm64 5.10 offers PAGEFAULT_FLAG_WP (0x1ff): before 00b151f21f39 (5.14) the API did not
    hide it on architectures without the uffd-wp bit, where MODE_WP registered and no write
    ever faulted."""
    at = support.Here("aarch64", "5.10.0-30-arm64", {WP: "n"}, "/boot/config-5.10.0-30-arm64")
    a = support.absence("pagefault_flag_wp", 0x1ff, at)
    assert a is not None and a.offered and a.why == support.ARCHITECTURE
    assert support.usable_mask(0x1ff, at) == 0x1fe
    text = advice.not_offered([a])
    assert "PAGEFAULT_FLAG_WP is offered, but this kernel has no userfaultfd write-protect " \
           "on arm64" in text and "00b151f21f39" in text
    # On x86_64 the same offer is real (5.7), and on arm64 from 5.14 the offer is believed.
    assert support.absence("pagefault_flag_wp", 0x1ff, at._replace(machine="x86_64")) is None
    assert support.absence("pagefault_flag_wp", 0x1fff, at._replace(release="6.1.0")) is None


def test_other_architectures_and_configurations() -> None:
    riscv = support.Here("riscv64", "6.1.0-26-riscv64", None)
    a = support.absence("minor_shmem", 0x1ff, riscv)
    assert a is not None and a.why == support.ARCHITECTURE and a.needs == "6.5"
    assert "riscv64 gained it in 6.5, commit a2492ca86c98" in advice.not_offered([a])
    ppc = support.Here("ppc64le", "6.1.0", None)
    a = support.absence("pagefault_flag_wp", 0xffe, ppc)
    assert a is not None and a.why == support.ARCHITECTURE and a.needs is None
    assert "run it on an architecture with userfaultfd write-protect: x86_64 5.7 or newer, " \
           "arm64 6.10 or newer" in advice.absence_fix([a])
    # An architecture the tables do not know: its configuration decides.
    mips = support.Here("mips64", "6.1.0", {WP: "n"}, "/boot/config-6.1.0")
    a = support.absence("pagefault_flag_wp", 0xffe, mips)
    assert a is not None and a.why == support.ARCHITECTURE and not a.known_arch
    # PTE markers switched off in an x86_64 configuration: the configuration, not the release.
    x86 = support.Here("x86_64", "6.6.0", {WP: "y", MARKER: "n"}, "/boot/config-6.6.0")
    a = support.absence("wp_hugetlbfs_shmem", 0x4fff & ~0x1000, x86)
    assert a is not None and a.why == support.CONFIGURATION and a.symbol == MARKER
    assert advice.absence_fix([a]) == "use a kernel built with CONFIG_PTE_MARKER_UFFD_WP=y"


# ----- every consumer says it the same way ---------------------------------------------------

class Masked:
    """A real userfaultfd whose UFFDIO_API answer is reduced to ``mask``: the one thing of a
    kernel faked here.  Records what was registered, and stops at the first handshake that
    asks for features (``stop``): the point where a demo has passed its checks."""

    def __init__(self, mask: int, stop: bool = False) -> None:
        self.mask = mask
        self.stop = stop
        self.registered = 0

    def open(self) -> uffd.Userfaultfd:
        kernel = self

        class Fd(uffd.Userfaultfd):
            def api(self, features: int = 0) -> tuple[int, int]:
                if features & ~kernel.mask:  # userfaultfd_api(): EINVAL past its answer
                    raise uffd.UffdError("api", errno.EINVAL)
                if features and kernel.stop:
                    raise Handshake(features)
                offered, ioctls = super().api(features)
                self.features = offered & kernel.mask
                return self.features, ioctls

            def register(self, start: int, length: int, mode: int) -> int:
                kernel.registered += 1
                return super().register(start, length, mode)

        return Fd(uffd.open_with(abi.OPEN_METHODS[0]))


class Handshake(Exception):
    """The demo asked UFFDIO_API for its features: every check before it passed."""


@pytest.fixture(scope="module")
def arm64_report() -> probe.ProbeReport:
    """A probe of this machine with arm64 6.1's answer and architecture: the real access
    checks, memory types and registrations, the mask and the Here changed."""
    k = ARM64_61
    kernel = probe.Kernel(k.at.release, k.at.machine, dict(k.at.config or {}),
                          k.at.config_source)
    opener = Masked(k.offered).open
    api = probe.probe_api(opener, "syscall", k.at)
    matrix = probe.probe_matrix(opener, api.features_mask, False, k.at)
    return probe.ProbeReport(kernel, access.diagnose(), api, matrix, hugepages.read_pools(),
                             ioctls_checked=False)


def test_probe_features_and_matrix_name_arm64(arm64_report: probe.ProbeReport) -> None:
    report = arm64_report
    wp = report.feature("pagefault_flag_wp")
    assert wp is not None and not wp.offered and wp.first_here == "6.10" and wp.first == "5.7"
    assert wp.why_not and "no userfaultfd write-protect on arm64" in wp.why_not
    assert wp.fix and "6.10" in wp.fix
    minor = report.feature("minor_shmem")
    assert minor is not None and minor.offered and minor.usable and minor.why_not is None
    kinds = {mt.name: mt.kind for mt in memtypes.MEMORY_TYPES}
    for cell in report.matrix:
        # Every write-protect cell the memory could do (minor is never on anon: that one is
        # the memory type's): the architecture, never the memory type or a release.
        if "wp" in cell.mode.split("+") and abi.combo_support(cell.mode, kinds[cell.memory]):
            assert cell.status == "unsupported" and cell.errno is None, cell
            assert "write-protect on arm64" in (cell.error or ""), cell
            assert "memory type" not in (cell.error or "") and "5.7" not in (cell.error or "")
            assert cell.fix and cell.fix.startswith("use a kernel 6.10 or newer"), cell
    doc = documents.probe_json(report)
    row = next(f for f in doc["api"]["features"] if f["name"] == "pagefault_flag_wp")
    assert row["first_here"] == "6.10" and "arm64" in row["why_not"]
    con = Console(record=True, width=200, force_terminal=False)
    probe_view.render(report, con)
    out = con.export_text()
    assert "CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set  (arm64 selects it from 6.10, " \
           "5b32510af77b" in out
    assert "CONFIG_PTE_MARKER_UFFD_WP is not set  (it needs CONFIG_HAVE_ARCH_USERFAULTFD_WP: " \
           "arm64 selects that from 6.10" in out
    assert "since (arm64)" in out
    assert re.search(r"pagefault_flag_wp\s*\|\s*6\.10\s*\|\s*no", out), out
    assert ("INFO  this kernel does not offer PAGEFAULT_FLAG_WP, WP_HUGETLBFS_SHMEM, "
            "WP_UNPOPULATED, WP_ASYNC: it has no userfaultfd write-protect on arm64 "
            "(CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set: arm64 gained it in 6.10") in out
    assert "added in 5.7" not in out and "added in 5.19" not in out
    demos = {d.demo: d for d in probe.capacity(report).demos}
    assert "write-protect on arm64" in demos["wp"].why


def test_require_and_the_pytest_plugin_name_arm64(arm64_report: probe.ProbeReport) -> None:
    release = ARM64_61.at.release
    results = {r.requirement.text: r for r in check_requirements(arm64_report, [
        parse_requirement(t) for t in ("pagefault_flag_wp", "wp_hugetlbfs_shmem", "wp:anon",
                                       "writeprotect", "writeprotect:shmem", "minor_shmem")])}
    flag = results["pagefault_flag_wp"]
    assert not flag.met and flag.reason.startswith(
        f"not offered by kernel {release}: it has no userfaultfd write-protect on arm64 "
        "(CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set: arm64 gained it in 6.10"), flag.reason
    assert "fix: use a kernel 6.10 or newer" in flag.reason
    assert "added in 5.19" not in results["wp_hugetlbfs_shmem"].reason
    assert "write-protect on arm64" in results["wp:anon"].reason
    ioctl = results["writeprotect"]
    assert not ioctl.met and "no registration offers UFFDIO_WRITEPROTECT: it needs wp:" in \
        ioctl.reason and "write-protect on arm64" in ioctl.reason, ioctl.reason
    assert "write-protect on arm64" in results["writeprotect:shmem"].reason
    assert results["minor_shmem"].met
    # The plugin's skip reason is the same sentence, at the test that asked.
    stash = pytest.Stash()
    stash[pytest_plugin._REPORT] = arm64_report
    item = SimpleNamespace(config=SimpleNamespace(stash=stash),
                           iter_markers=lambda name: [pytest.mark.uffd("wp:shmem").mark])
    reason = pytest_plugin.skip_reason(item)  # type: ignore[arg-type]
    assert reason is not None and reason.startswith("uffd: wp:shmem not available: ")
    assert "write-protect on arm64" in reason and "memory type" not in reason


# ----- the demos: refused before registering, for every mode, backing and option --------------

def _combinations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for mode, scenario in scenarios.SCENARIOS.items():
        for backing in scenario.backings:
            yield mode, backing, {}
            for option, _ in scenario.option_features:
                yield mode, backing, {option: True}
            if mode == "missing" and backing != "hugetlb":  # --zero: a usage error there
                yield mode, backing, {"zero": True}
            if mode == "minor":
                yield mode, backing, {"write": True, "modify": True}


COMBINATIONS = list(_combinations())


def _check_demo(k: Kernel, mode: str, backing: str, options: dict[str, Any]) -> bool:
    """Run one demo in-process against ``k``'s answer: refused before anything is mapped
    (True) when a feature it needs is missing, else through every check to its handshake."""
    cfg = demo.DemoConfig(mode=mode, backing=backing, pages=2, **options)
    scenario = scenarios.SCENARIOS[mode]
    absent = scenario.absent(memtypes.MEMORY_BY_NAME[backing].kind, cfg, k.offered, k.at)
    kernel = Masked(k.offered, stop=True)
    steps: list[str] = []

    def emit(e: Any) -> None:
        steps.append(getattr(e, "name", "fault"))

    def open_uffd() -> tuple[uffd.Userfaultfd, str]:
        return kernel.open(), "syscall"

    what = (k.name, mode, backing, options)
    if not absent:
        with pytest.raises(Handshake):
            demo.run_demo(scenario, cfg, emit, open_uffd, k.at)
        assert steps == ["opened"], what
        return False
    with pytest.raises(errors.UffdctlError) as exc:
        demo.run_demo(scenario, cfg, emit, open_uffd, k.at)
    err = exc.value
    assert err.status == errors.UNAVAILABLE, what
    assert steps == ["opened"] and kernel.registered == 0, what  # nothing mapped
    assert "\n" not in err.cause and "internal error" not in err.cause, what
    for a in absent:
        assert a.name in err.cause, (what, err.cause)
        if a.why == support.ARCHITECTURE:
            assert f"on {a.arch}" in err.cause and a.symbol in err.cause, err.cause
            assert f"added in {a.first}" not in err.cause, err.cause
        elif a.why == support.RELEASE:
            assert f"added in {a.first}" in err.cause, err.cause
    needs = max((a.needs for a in absent if a.needs), key=abi.release_order)
    assert f"use a kernel {needs} or newer" in err.fix, (what, err.fix)
    return True


@pytest.mark.parametrize("k", KERNELS, ids=[k.name for k in KERNELS])
def test_every_demo_checks_the_offer_before_registering(k: Kernel) -> None:
    refused = sum(_check_demo(k, mode, backing, options)
                  for mode, backing, options in COMBINATIONS)
    # What each kernel must refuse: arm64 6.1 every wp run; x86_64 5.10 minor everywhere,
    # wp on shmem and hugetlb, and --async; 6.18 and arm64 6.12 nothing.
    expected = {"arm64 6.1": sum(1 for m, _, _ in COMBINATIONS if m == "wp"),
                "x86_64 5.10": sum(1 for m, b, o in COMBINATIONS
                                   if m == "minor" or (m == "wp" and (b != "anon" or o))),
                "arm64 6.12": 0, "x86_64 6.18": 0}
    assert refused == expected[k.name], (k.name, refused)


# ----- on the running kernel ----------------------------------------------------------------

def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _expect(run_cli: Callable[..., Any], mode: str, backing: str, options: list[str]) -> None:
    cfg = demo.DemoConfig(mode=mode, backing=backing, wp_async="--async" in options)
    at = support.here()
    absent = scenarios.SCENARIOS[mode].absent(memtypes.MEMORY_BY_NAME[backing].kind, cfg,
                                             offered_features(), at)
    res = run_cli("demo", mode, "--backing", backing, "--pages", "2", "--json", *options)
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    events = _lines(res.stdout)
    last = events[-1]
    assert last["event"] == "summary", events
    if not absent:
        assert res.returncode == 0, res.stderr
        assert last["ok"] and last["exit_status"] == 0, last
        return
    assert res.returncode == errors.UNAVAILABLE, (res.returncode, res.stderr)
    (line,) = res.stderr.strip().splitlines()
    assert last["exit_status"] == errors.UNAVAILABLE and last["error"] in line, (last, line)
    assert not any(e.get("name") in ("mapped", "registered") for e in events), events
    for a in absent:
        assert a.name in line, line
        if a.why == support.ARCHITECTURE:
            # The architecture's support, by its symbol and the release that brings it.
            assert f"on {a.arch}" in line and a.symbol in line, line
            if a.needs:
                assert f"use a kernel {a.needs} or newer" in line, line
        elif a.why == support.RELEASE:
            assert f"added in {a.first}" in line, line


@pytest.mark.kernel
@pytest.mark.parametrize(("mode", "backing", "options"), [
    ("wp", "anon", []), ("wp", "anon", ["--async"]), ("wp", "shmem", []),
    ("missing", "anon", []), ("missing", "shmem", []), ("minor", "shmem", []),
])
def test_demo_refuses_what_this_kernel_lacks(run_cli: Callable[..., Any], mode: str,
                                              backing: str, options: list[str]) -> None:
    """Whatever kernel runs it (arm64 6.1 in the matrix: every wp run refused naming arm64's
    write-protect support): exit 3 with a one-line cause and the final JSON summary, or a
    demo that succeeds."""
    _expect(run_cli, mode, backing, options)


@pytest.mark.kernel
@pytest.mark.parametrize("mode", ["wp", "missing", "minor"])
def test_hugetlb_demo_refuses_what_this_kernel_lacks(
        run_cli: Callable[..., Any],
        hugepages: Callable[..., AbstractContextManager[Any]], mode: str) -> None:
    if not os.path.isdir("/sys/kernel/mm/hugepages"):
        pytest.skip("no huge page pools on this kernel")
    with hugepages(4):  # --pages 2, and as many for the floor's mapping
        _expect(run_cli, mode, "hugetlb", [])
