"""pytest plugin (entry point ``uffdctl``): skip tests the kernel or the process cannot run.

    @pytest.mark.uffd("minor:hugetlb")              # a register mode on a memory type
    @pytest.mark.uffd("minor_shmem", "continue")    # a feature and an ioctl, both needed
    @pytest.mark.uffd("minor:shmem@user-mode")      # user-mode faults are enough
    @pytest.mark.uffd("move:shmem", "kernel>=6.8")  # an ioctl that works there; a release
    @pytest.mark.uffd(profile="criu-lazy-pages")    # what a consumer needs (probe --list-profiles)

A marked test is skipped with the probe's own reason (the errno and its cause, e.g. "EINVAL"
or "EPERM: vm.unprivileged_userfaultfd is 0"), so the skip says what to fix, and the skip is
reported at that test, with that test's own requirements: two tests skipped for the same
cause are two lines of ``-rs``, each naming its test's file and line.  As
`probe --require`, a requirement holds only with kernel-mode faults (what a test that makes a
syscall, KVM or O_DIRECT touch registered memory needs), unless it carries ``@user-mode``: a
UFFD_USER_MODE_ONLY descriptor, all an unprivileged process gets with
vm.unprivileged_userfaultfd=0, then counts too.  The probe runs once per session and only when
a collected test carries the marker; an unknown requirement name or qualifier stops the run at
collection, with a suggestion, like `probe --require`.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

PROBES_RUN = 0  # how many times this process ran the probe (the tests check it is once)
_REPORT = pytest.StashKey[Any]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "uffd(*requirements, profile=NAME): skip unless userfaultfd can do all "
        "of them here with kernel-mode faults, in the language of `uffdctl probe --require`: "
        "features (minor_hugetlbfs), register cells MODE:MEMORY (minor:hugetlb), ioctls "
        "(continue) or IOCTL:MEMORY (move:shmem), kernel-faults, method=NAME, kernel>=X.Y, "
        "hugepages:2M>=N; NAME@user-mode when user-mode faults are enough; profile= a "
        "consumer's requirements (`uffdctl probe --list-profiles`)")


def _requirements(item: pytest.Item) -> list[str]:
    """The requirement expressions of the item's marks, a profile's expanded."""
    names = [name.strip() for mark in item.iter_markers("uffd") for arg in mark.args
             for name in str(arg).split(",") if name.strip()]
    profiles = [str(mark.kwargs["profile"]) for mark in item.iter_markers("uffd")
                if "profile" in mark.kwargs]
    if profiles:
        from .profiles import UnknownProfile, profile

        for name in profiles:
            try:
                names += [r.expression for r in profile(name).requirements]
            except UnknownProfile as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.uffd: {exc}") from None
    return names


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [(item, names) for item in items if (names := _requirements(item))]
    if not marked:
        return  # most test suites: nothing of uffdctl's is imported
    from .require import RequirementError, parse_requirement

    for item, names in marked:
        for name in names:
            try:
                parse_requirement(name)
            except RequirementError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.uffd: {exc}") from None


def _report(config: pytest.Config) -> Any:
    global PROBES_RUN
    if _REPORT not in config.stash:
        from .probe import run_probe

        PROBES_RUN += 1
        config.stash[_REPORT] = run_probe(check_ioctls=True)
    return config.stash[_REPORT]


def skip_reason(item: pytest.Item) -> str | None:
    """Why ``item`` cannot run here (None: it can): each unmet requirement of its own, as
    written, with the probe's reason; and the fix when no userfaultfd opens at all."""
    names = _requirements(item)
    if not names:
        return None
    from .require import check_requirements, parse_requirement

    report = _report(item.config)
    unmet = [r for r in check_requirements(report, [parse_requirement(n) for n in names])
             if not r.met]
    if not unmet:
        return None
    text = "; ".join(f"{r.requirement.text} not available: {r.reason}" for r in unmet)
    if not report.usable:
        _, fix = report.access.summary()
        if fix and fix not in text:
            text += f" (fix: {fix})"
    return f"uffd: {text}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    # A skip mark on the item, not pytest.skip() from here: pytest.skip() in a hook is
    # reported at the line of this file that raised it, and -rs merges equal reasons from
    # different tests into one such line.  The mark is evaluated by pytest's own skipping
    # plugin in its setup (a plain tryfirst hook: a wrapper's first half runs before it),
    # which raises the skip with the item's location (_pytest/skipping.py
    # pytest_runtest_setup), so each skip names the test that asked.
    reason = skip_reason(item)
    if reason is not None:
        item.add_marker(pytest.mark.skip(reason=reason))
    yield
