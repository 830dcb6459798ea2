"""Each fact lives in one table, and everything that depends on it follows the table.

The test changes abi.MODE_SUPPORT's row for minor faults on shmem so that the mode needs a
feature this kernel does not offer, then checks that the probe's matrix, `--require`, the CI
formats, the demo and inspect's attribution all follow, with nothing else changed.
"""

from __future__ import annotations

import pytest

from uffdctl import abi, access, advice, errors, fdinfo, kconfig, procs, smaps, support, uffd


def _offered() -> int:
    with access.opener(access.open_uffd()[1])() as u:
        return u.api(0)[0]


def _fds(owner: procs.Owner | None) -> list[int]:
    assert owner is not None
    return owner.fds


def test_tables_are_consistent() -> None:
    for row in abi.MODE_SUPPORT:
        assert row.mode in abi.MODE_BY_NAME and row.memory in ("anon", "shmem", "hugetlb", "file")
        assert all(k in abi.FEATURE_BY_KEY for k in row.features + row.required)
        assert set(row.required) <= set(row.features)
        assert all(i in abi.IOCTL_BY_KEY for i in row.ioctls)
        assert row.kconfig.startswith("CONFIG_")
    assert len({(r.mode, r.memory) for r in abi.MODE_SUPPORT}) == len(abi.MODE_SUPPORT)
    assert abi.OPEN_METHODS[0].name == "syscall"
    assert [m.kernel_faults for m in abi.OPEN_METHODS] == [True, True, False]
    # The Kconfig symbols probe reports come from the tables.
    assert set(kconfig.SYMBOLS) >= {f.kconfig for f in abi.FEATURES if f.kconfig}


def test_releases() -> None:
    assert abi.release_at_least("6.1.0-26-amd64", "5.13")
    assert not abi.release_at_least("5.10.0-33-amd64", "5.13")
    assert abi.release_at_least("5.13.0", "5.13")
    assert not abi.release_at_least("7.3.0-rc7", "7.3-rc")
    assert abi.release_at_least("7.4.0", "7.3-rc")


def test_unknown_architectures_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(abi, "machine", lambda: "s390x")
    with pytest.raises(errors.UffdctlError, match="does not support s390x") as exc:
        uffd.syscall_number()
    assert exc.value.status == errors.UNAVAILABLE


@pytest.mark.uffd("minor:shmem")
def test_one_table_moves_probe_require_formats_demo_and_inspect(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from uffdctl import demo, probe, require, scenarios
    from uffdctl.render import documents, formats

    if _offered() & abi.FEATURE_BY_KEY["rwp"].mask:
        pytest.skip("this kernel offers RWP: the test needs a feature it does not offer")
    row = abi.mode_support("minor", "shmem")
    assert row is not None
    patched = row._replace(features=("rwp",))
    monkeypatch.setattr(abi, "MODE_SUPPORT", tuple(
        patched if r is row else r for r in abi.MODE_SUPPORT))

    # probe: the cell is refused for the feature, with the table's cause; hugetlb is untouched.
    report = probe.run_probe(check_ioctls=False)
    cell = report.cell("minor", "shmem")
    assert cell is not None and cell.status == "unsupported" and "RWP" in (cell.error or "")
    assert report.cell("missing", "shmem").ok  # type: ignore[union-attr]
    # --require and the flat formats read the same cell.
    [result] = require.check_requirements(report, [require.parse_requirement("minor:shmem")])
    assert not result.met and "RWP" in result.reason
    facts = formats.facts(documents.probe_json(report))
    assert facts["cell_minor_shmem_private"] is False
    assert facts["cell_missing_shmem_private"] is True

    # demo: refused before anything is mapped, naming the missing feature.
    cfg = demo.DemoConfig(mode="minor", backing="shmem", pages=1)
    with pytest.raises(errors.UffdctlError, match="RWP") as exc:
        scenarios.run(cfg, lambda _e: None)
    assert exc.value.status == errors.UNAVAILABLE

    # inspect: a descriptor that asked for MINOR_SHMEM is no longer the evidence for the
    # region; every descriptor that may have registered it is named.
    region = smaps.Region(0x1000, 0x3000, "rw-s", 0, "00:01", 1, "/memfd:x (deleted)",
                          flags=["rd", "wr", "sh", "mr", "mw", "me", "ms", "ui"])
    assert region.memory == "shmem"
    a = fdinfo.UffdDescriptor(3, fdinfo.parse_fdinfo("API:\taa:80000400:0\n"))  # MINOR_SHMEM
    b = fdinfo.UffdDescriptor(4, fdinfo.parse_fdinfo("API:\taa:80000100:0\n"))  # THREAD_ID
    assert _fds(procs.attribute([region], [a, b]).of(region)) == [3, 4]
    monkeypatch.undo()
    assert _fds(procs.attribute([region], [a, b]).of(region)) == [3]


def test_cause_names_the_architecture_when_the_release_is_new_enough() -> None:
    # A kernel newer than the release that added PAGEFAULT_FLAG_WP whose configuration leaves
    # CONFIG_HAVE_ARCH_USERFAULTFD_WP unset (Debian's arm64 6.1): the cause is the
    # architecture's support, never "added in 5.7" (tests/test_arch.py has the rest).
    arm = support.Here("aarch64", "6.1.0-26-arm64",
                       {"CONFIG_HAVE_ARCH_USERFAULTFD_WP": "n"}, "/boot/config-test")
    absent = support.missing(["pagefault_flag_wp"], 0xffe, arm)
    text = advice.not_offered(absent)
    assert "CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set: arm64 gained it in 6.10" in text
    assert "added in" not in text
    assert advice.absence_fix(absent).startswith("use a kernel 6.10 or newer")
    # The same bit missing from x86_64 5.4: there it is the release.
    old = support.Here("x86_64", "5.4.0", None)
    absent = support.missing(["pagefault_flag_wp"], 0x1fe, old)
    assert "added in 5.7" in advice.not_offered(absent)
    assert advice.absence_fix(absent) == "use a kernel 5.7 or newer"
