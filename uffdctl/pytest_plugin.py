"""pytest plugin (entry point ``uffdctl``): skip tests the kernel or the process cannot run.

    @pytest.mark.uffd("minor:hugetlb")              # a register mode on a memory type
    @pytest.mark.uffd("minor_shmem", "continue")    # a feature and an ioctl, both needed
    @pytest.mark.uffd("minor:shmem@user-mode")      # user-mode faults are enough

A marked test is skipped with the probe's own reason (the errno and its cause, e.g. "no free
huge pages" or "EPERM: vm.unprivileged_userfaultfd is 0"), so the skip says what to fix.  As
`probe --require`, a requirement holds only with kernel-mode faults (what a test that makes a
syscall, KVM or O_DIRECT touch registered memory needs), unless it carries ``@user-mode``: a
UFFD_USER_MODE_ONLY descriptor, all an unprivileged process gets with
vm.unprivileged_userfaultfd=0, then counts too.  The probe runs once per session and only when
a collected test carries the marker; an unknown requirement name or qualifier stops the run at
collection, with a suggestion, like `probe --require`.
"""

from __future__ import annotations

from typing import Any

import pytest

PROBES_RUN = 0  # how many times this process ran the probe (the tests check it is once)
_REPORT = pytest.StashKey[Any]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "uffd(*requirements): skip unless userfaultfd can do all of them here "
        "with kernel-mode faults: features (minor_hugetlbfs), register cells MODE:MEMORY "
        "(minor:hugetlb) or ioctls (continue), as `uffdctl probe --require` takes them; "
        "NAME@user-mode when user-mode faults are enough")


def _requirements(item: pytest.Item) -> list[str]:
    return [name.strip() for mark in item.iter_markers("uffd") for arg in mark.args
            for name in str(arg).split(",") if name.strip()]


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


def pytest_runtest_setup(item: pytest.Item) -> None:
    names = _requirements(item)
    if not names:
        return
    from .require import check_requirements, parse_requirement

    report = _report(item.config)
    if not report.usable:
        cause, fix = report.access.summary()
        pytest.skip(f"uffd: no userfaultfd for this process: {cause}"
                    + (f" (fix: {fix})" if fix else ""))
    for result in check_requirements(report, [parse_requirement(n) for n in names]):
        if not result.met:
            pytest.skip(f"uffd: {result.requirement.text} not available: {result.reason}")
