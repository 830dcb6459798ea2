"""The syscall and memory-type layers against the real kernel."""

from __future__ import annotations

import errno
import select
import threading

import pytest

from uffdctl import abi, memtypes, uffd


def test_api_handshake_reports_features_and_is_once_per_fd() -> None:
    with uffd.Userfaultfd.open() as u:
        features, ioctls = u.api(0)
        assert features & 0x1FFFF == 0x1FFFF  # this machine: 6.18, everything through MOVE
        assert ioctls == 0x8000000000000003
        with pytest.raises(uffd.UffdError) as exc:
            u.api(0)
        assert exc.value.errno == errno.EINVAL and exc.value.step == "api"


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


@pytest.mark.parametrize("memory,expected", [
    ("anon", {"missing": 0x13C, "wp": 0x17C, "minor": None}),
    ("shmem", {"missing": 0x13C, "wp": 0x17C, "minor": 0x1BC, "wp+minor": 0x1FC}),
    ("shmem-private", {"missing": 0x13C, "minor": 0x1BC}),
])
def test_register_ioctls_per_memory_type(memory: str, expected: dict[str, int | None]) -> None:
    for combo, want in expected.items():
        area = memtypes.allocate(memory, 2)
        try:
            with uffd.Userfaultfd.open() as u:
                u.api(0)
                if want is None:
                    with pytest.raises(uffd.UffdError) as exc:
                        u.register(area.addr, area.length, abi.mode_value(combo))
                    assert exc.value.errno == errno.EINVAL
                else:
                    assert u.register(area.addr, area.length, abi.mode_value(combo)) == want
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


def test_minor_faults_on_shmem_resolve_with_continue() -> None:
    _minor_fault_round("shmem", "minor_shmem")


def test_minor_faults_on_hugetlb_resolve_with_continue(hugepages) -> None:  # type: ignore[no-untyped-def]
    with hugepages(3):
        _minor_fault_round("hugetlb", "minor_hugetlbfs")


def test_hugetlb_mmap_without_free_pages_is_enomem(no_free_hugepages) -> None:  # type: ignore[no-untyped-def]
    with no_free_hugepages(), pytest.raises(uffd.UffdError) as exc:
        memtypes.allocate("hugetlb", 1)
    assert exc.value.errno == errno.ENOMEM and exc.value.step == "mmap"


def test_wp_async_written_pages_found_by_pagemap_scan() -> None:
    """Facts §9.8: WP_ASYNC, protect 8 pages with PM_SCAN_WP_MATCHING, write 2 and 5."""
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
            regions, _ = uffd.pagemap_scan(area.addr, end, category_mask=abi.PAGE_IS["WRITTEN"],
                                           return_mask=0xFF)
            assert [(r.start - area.addr, r.end - area.addr) for r in regions] == [
                (0x2000, 0x3000), (0x5000, 0x6000)]
            assert {r.categories for r in regions} == {0xB}  # WPALLOWED|WRITTEN|PRESENT
            wp = [bool(e & abi.PM_UFFD_WP) for e in uffd.pagemap_entries(area.addr, 8)]
            assert wp == [True, True, False, True, True, False, True, True]
    finally:
        memtypes.release(area)


def test_pagemap_scan_check_wpasync_on_unregistered_range_is_eperm() -> None:
    area = memtypes.allocate("anon", 2)
    try:
        with pytest.raises(uffd.UffdError) as exc:
            uffd.pagemap_scan(area.addr, area.addr + area.length,
                              flags=abi.PM_SCAN_WP_MATCHING | abi.PM_SCAN_CHECK_WPASYNC,
                              category_mask=abi.PAGE_IS["WPALLOWED"])
        assert exc.value.errno == errno.EPERM
    finally:
        memtypes.release(area)
