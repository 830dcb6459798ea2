"""The syscall and memory-type layers against the real kernel."""

from __future__ import annotations

import errno
import platform
import select
import threading

import pytest

from uffdctl import abi, memtypes, uffd


@pytest.mark.kernel
def test_api_handshake_reports_features_and_is_once_per_fd() -> None:
    with uffd.Userfaultfd.open() as u:
        features, ioctls = u.api(0)
        # Every kernel since 4.14 offers these; and no kernel offers a feature before the
        # release our table says added it (the table would be wrong, not the kernel).
        assert features & abi.features_mask(["missing_shmem", "missing_hugetlbfs", "thread_id"])
        release = platform.release()
        for name in abi.feature_names(features):
            first = abi.FEATURE_BY_KEY[name].first if name in abi.FEATURE_BY_KEY else None
            assert first is None or abi.release_at_least(release, first), (name, release)
        assert ioctls == abi.IOCTL_BY_KEY["api"].mask | abi.IOCTL_BY_KEY["register"].mask | \
            abi.IOCTL_BY_KEY["unregister"].mask
        with pytest.raises(uffd.UffdError) as exc:
            u.api(0)
        assert exc.value.errno == errno.EINVAL and exc.value.step == "api"


@pytest.mark.kernel
def test_unknown_feature_is_einval() -> None:
    with uffd.Userfaultfd.open() as u, pytest.raises(uffd.UffdError) as exc:
        u.api(1 << 40)
    assert exc.value.errno == errno.EINVAL


def test_messages_decode() -> None:
    raw = bytes([0x12, 0, 0, 0, 0, 0, 0, 0]) + (4).to_bytes(8, "little") + \
        (0x7F0000200000).to_bytes(8, "little") + (1234).to_bytes(4, "little") + bytes(4)
    (m,) = uffd.decode_messages(raw)
    assert (m.event_name, m.kind, m.address, m.ptid) == ("PAGEFAULT", "minor", 0x7F0000200000,
                                                         1234)


def _expected_ioctls(combo: str, offered: int) -> int:
    """What userfaultfd_register() hands back for a non-hugetlb range, from this kernel's own
    offer: WAKE, COPY and ZEROPAGE always; MOVE and POISON where their features are offered
    (the ioctl and the feature came together, 6.8 and 6.6); WRITEPROTECT with WP, CONTINUE
    with MINOR."""
    keys = ["wake", "copy", "zeropage"]
    keys += [k for k in ("move", "poison") if offered & abi.FEATURE_BY_KEY[k].mask]
    keys += ["writeprotect"] if "wp" in combo.split("+") else []
    keys += ["continue"] if "minor" in combo.split("+") else []
    return sum(abi.IOCTL_BY_KEY[k].mask for k in keys)


@pytest.mark.kernel
@pytest.mark.parametrize("memory", ["anon", "shmem", "shmem-private"])
def test_register_ioctls_per_memory_type(memory: str) -> None:
    kind = memtypes.MEMORY_BY_NAME[memory].kind
    for combo in abi.MATRIX_MODES:
        area = memtypes.allocate(memory, 2)
        try:
            with uffd.Userfaultfd.open() as u:
                offered = u.api(0)[0]
                rows = abi.combo_support(combo, kind)
                if rows is None or not all(offered & abi.features_mask(r.features) ==
                                           abi.features_mask(r.features) for r in rows):
                    # Never allowed on this memory, or this kernel cannot do it: EINVAL.
                    with pytest.raises(uffd.UffdError) as exc:
                        u.register(area.addr, area.length, abi.mode_value(combo))
                    assert exc.value.errno == errno.EINVAL, combo
                else:
                    got = u.register(area.addr, area.length, abi.mode_value(combo))
                    assert got == _expected_ioctls(combo, offered), combo
        finally:
            memtypes.release(area)


def _minor_fault_round(memory: str, feature: str) -> None:
    area = memtypes.allocate(memory, 3)
    try:
        memtypes.MEMORY_BY_NAME[memory].map_alias(area)
        for i in range(area.pages):
            uffd.fill(area.alias + i * area.page_size, 0x41 + i, area.page_size)
        with uffd.Userfaultfd.open() as u:
            u.api(abi.FEATURE_BY_KEY[feature].mask | abi.FEATURE_BY_KEY["thread_id"].mask)
            u.register(area.addr, area.length, abi.mode_value("minor"))
            expected = b"".join(bytes([0x41 + i]) * area.page_size for i in range(area.pages))
            result: dict[str, object] = {}

            def toucher() -> None:
                result["tid"] = threading.get_native_id()
                result["ok"] = uffd.compare(area.addr, expected)

            t = threading.Thread(target=toucher)
            t.start()
            seen = []
            while len(seen) < area.pages:
                assert select.select([u.fd], [], [], 10)[0], "no fault message within 10 s"
                for m in u.read_messages():
                    seen.append(m)
                    u.continue_(m.address, area.page_size)
            t.join(10)
            assert result["ok"] is True
            assert [m.kind for m in seen] == ["minor"] * area.pages
            assert sorted(m.address for m in seen) == [area.page(i) for i in range(area.pages)]
            assert {m.ptid for m in seen} == {result["tid"]}
    finally:
        memtypes.release(area)


@pytest.mark.kernel
@pytest.mark.uffd("minor_shmem")
def test_minor_faults_on_shmem_resolve_with_continue() -> None:
    _minor_fault_round("shmem", "minor_shmem")


@pytest.mark.kernel
@pytest.mark.uffd("minor_hugetlbfs")
def test_minor_faults_on_hugetlb_resolve_with_continue(hugepages) -> None:  # type: ignore[no-untyped-def]
    with hugepages(3):
        _minor_fault_round("hugetlb", "minor_hugetlbfs")


@pytest.mark.kernel
def test_hugetlb_mmap_without_free_pages_is_enomem(no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages(), pytest.raises(uffd.UffdError) as exc:
        memtypes.allocate("hugetlb", 1)
    assert exc.value.errno == errno.ENOMEM and exc.value.step == "mmap"


@pytest.mark.kernel
@pytest.mark.uffd("wp_async")
def test_wp_async_written_pages_found_by_pagemap_scan() -> None:
    """WP_ASYNC (6.7), protect 8 pages with PM_SCAN_WP_MATCHING, write pages 2 and 5."""
    area = memtypes.allocate("anon", 8)
    try:
        with uffd.Userfaultfd.open() as u:
            u.api(abi.FEATURE_BY_KEY["wp_async"].mask)
            u.register(area.addr, area.length, abi.mode_value("wp"))
            end = area.addr + area.length
            uffd.pagemap_scan(area.addr, end,
                              flags=abi.PM_SCAN_WP_MATCHING | abi.PM_SCAN_CHECK_WPASYNC,
                              category_mask=abi.PAGE_IS["WPALLOWED"])
            for i in (2, 5):
                uffd.fill(area.page(i), 1, area.page_size)
            # Only the categories the test is about: SOFT_DIRTY, say, is set too on kernels
            # built with CONFIG_MEM_SOFT_DIRTY (Debian's 6.12).
            shown = abi.PAGE_IS["WPALLOWED"] | abi.PAGE_IS["WRITTEN"] | abi.PAGE_IS["PRESENT"]
            regions, _ = uffd.pagemap_scan(area.addr, end, category_mask=abi.PAGE_IS["WRITTEN"],
                                           return_mask=shown)
            assert [(r.start, r.end) for r in regions] == [
                (area.page(2), area.page(3)), (area.page(5), area.page(6))]
            assert {r.categories for r in regions} == {0xB}  # WPALLOWED|WRITTEN|PRESENT
            wp = [bool(e & abi.PM_UFFD_WP) for e in uffd.pagemap_entries(area.addr, 8)]
            assert wp == [True, True, False, True, True, False, True, True]
    finally:
        memtypes.release(area)


@pytest.mark.kernel
def test_pagemap_scan_check_wpasync_on_unregistered_range_is_eperm() -> None:
    area = memtypes.allocate("anon", 2)
    try:
        try:
            uffd.pagemap_scan(area.addr, area.addr + area.length,
                              category_mask=abi.PAGE_IS["PRESENT"])
        except uffd.UffdError as exc:
            # Before 6.7 /proc/PID/pagemap has no ioctl at all (fs/proc/task_mmu.c: 6.7 added
            # pagemap_ioctl() as proc_pagemap_operations.unlocked_ioctl, in the same series as
            # UFFD_FEATURE_WP_ASYNC), so vfs_ioctl() answers ENOTTY.  That is the kernel's
            # answer, asserted, not skipped: and such a kernel cannot offer WP_ASYNC either,
            # the only way a range becomes async-WP capable.
            assert exc.errno == errno.ENOTTY, exc
            with uffd.Userfaultfd.open() as u:
                assert not u.api(0)[0] & abi.FEATURE_BY_KEY["wp_async"].mask
            return
        with pytest.raises(uffd.UffdError) as exc:
            uffd.pagemap_scan(area.addr, area.addr + area.length,
                              flags=abi.PM_SCAN_WP_MATCHING | abi.PM_SCAN_CHECK_WPASYNC,
                              category_mask=abi.PAGE_IS["WPALLOWED"])
        assert exc.value.errno == errno.EPERM
    finally:
        memtypes.release(area)
