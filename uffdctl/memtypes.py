"""Memory types as one small table of operations, after the kernel selftests'
tools/testing/selftests/mm/uffd-common.c (anon_uffd_test_ops, shmem_uffd_test_ops,
hugetlb_uffd_test_ops).

Each type knows how to allocate an area, how to map a second view of the same pages (the
"alias" that minor faults are resolved through; anonymous memory has none) and how to
release both.  Everything that touches memory goes through these operations, so the probe,
the demos and the tests all exercise the same five kinds of mapping.

``allocate(pages, page_size, noreserve=True)`` maps with MAP_NORESERVE: nothing is set aside
at mmap() for the faults to come.  For hugetlbfs that is the difference between "can this
kernel register huge page memory" and "is a huge page free now": do_mmap() (mm/mmap.c) sets
VM_NORESERVE for MAP_NORESERVE on a hugetlbfs file whatever vm.overcommit_memory says, and
hugetlb_reserve_pages() (mm/hugetlb.c) then takes no reservation, so the mmap() succeeds with
an empty pool where a reserving one fails with ENOMEM (seen on 6.18 with vm.nr_hugepages=0,
2 MB and 1 GB pages alike).  UFFDIO_REGISTER never faults a page in, so the probe registers
on such memory; a first touch there with no free page is SIGBUS, so anything that touches or
fills pages (the demos, UFFDIO_COPY, a write through the alias) maps with reservation.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from . import hugepages, uffd
from .records import NamedTuple, record

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@record
class Area:
    """A mapping of ``pages`` pages; ``alias`` is a second MAP_SHARED view where one exists."""

    memory: str
    addr: int
    length: int
    page_size: int
    fd: int = -1
    alias: int = 0

    @property
    def pages(self) -> int:
        return self.length // self.page_size

    def page(self, index: int) -> int:
        return self.addr + index * self.page_size


TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)
if TYPE_CHECKING:
    from typing import Protocol

    class Allocate(Protocol):
        """(pages, page_size, noreserve) -> Area; ``noreserve``: MAP_NORESERVE (module
        doc)."""

        def __call__(self, pages: int, page_size: int, noreserve: bool = False) -> Area: ...


class MemoryType(NamedTuple):
    """A memory type as the kernel selftests have them (uffd-common.c): its operations."""

    name: str  # as in the probe matrix and on the command line
    kind: str  # "anon", "shmem" or "hugetlb": what smaps and the features call it
    shared: bool
    description: str
    allocate: Allocate  # (pages, page_size, noreserve=False) -> Area
    map_alias: Callable[[Area], None]  # adds a second view of the same pages
    release: Callable[[Area], None]

    def page_size(self, huge_page_size: int | None = None) -> int:
        if self.kind != "hugetlb":
            return PAGE_SIZE
        if huge_page_size:
            return huge_page_size
        kb = hugepages.default_size_kb()
        return kb * 1024 if kb else 2 << 20


_RW = uffd.PROT_READ | uffd.PROT_WRITE


def _noreserve(noreserve: bool) -> int:
    # On anonymous memory and shmem MAP_NORESERVE only skips the commit charge (with
    # vm.overcommit_memory 0 or 1): the registration it is used for is the same either way.
    return uffd.MAP_NORESERVE if noreserve else 0


def _anon_allocate(pages: int, page_size: int, noreserve: bool = False) -> Area:
    length = pages * page_size
    flags = uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS | _noreserve(noreserve)
    return Area("anon", uffd.mmap(length, _RW, flags), length, page_size)


def _anon_alias(area: Area) -> None:
    raise uffd.UffdError("alias", 22, "anonymous private memory has no second view")


def _memfd_allocate(memory: str, shared: bool, huge: bool) -> Allocate:
    def allocate(pages: int, page_size: int, noreserve: bool = False) -> Area:
        length = pages * page_size
        # A huge page size the kernel has no hstate for: memfd_create() fails with ENODEV
        # (hugetlb_file_setup() in fs/hugetlbfs/inode.c), ENOSYS without CONFIG_HUGETLBFS.
        fd = uffd.memfd_create(f"uffdctl-{memory}", huge_page_size=page_size if huge else 0)
        try:
            # memfd_create() passes VM_NORESERVE for its hugetlbfs file (mm/memfd.c), so the
            # size reserves nothing either: a reservation is taken at mmap() or never.
            uffd.ftruncate(fd, length)
            flags = (uffd.MAP_SHARED if shared else uffd.MAP_PRIVATE) | _noreserve(noreserve)
            addr = uffd.mmap(length, _RW, flags, fd)
        except BaseException:
            os.close(fd)
            raise
        return Area(memory, addr, length, page_size, fd)
    return allocate


def _memfd_alias(area: Area) -> None:
    # Always MAP_SHARED: writes through the alias land in the page cache that a minor fault
    # (or a private mapping's first read) then finds.
    area.alias = uffd.mmap(area.length, _RW, uffd.MAP_SHARED, area.fd)


def _release(area: Area) -> None:
    """Unmap both views and close the memfd; safe to call twice."""
    if area.alias:
        uffd.munmap(area.alias, area.length)
        area.alias = 0
    if area.addr:
        uffd.munmap(area.addr, area.length)
        area.addr = 0
    if area.fd >= 0:
        os.close(area.fd)
        area.fd = -1


MEMORY_TYPES: tuple[MemoryType, ...] = (
    MemoryType("anon", "anon", False, "anonymous private (MAP_PRIVATE|MAP_ANONYMOUS)",
               _anon_allocate, _anon_alias, _release),
    MemoryType("shmem", "shmem", True, "shmem, shared (memfd, MAP_SHARED)",
               _memfd_allocate("shmem", True, False), _memfd_alias, _release),
    MemoryType("shmem-private", "shmem", False, "shmem, private mapping (memfd, MAP_PRIVATE)",
               _memfd_allocate("shmem-private", False, False), _memfd_alias, _release),
    MemoryType("hugetlb", "hugetlb", True, "hugetlbfs, shared (MFD_HUGETLB memfd, MAP_SHARED)",
               _memfd_allocate("hugetlb", True, True), _memfd_alias, _release),
    MemoryType("hugetlb-private", "hugetlb", False,
               "hugetlbfs, private mapping (MFD_HUGETLB memfd, MAP_PRIVATE)",
               _memfd_allocate("hugetlb-private", False, True), _memfd_alias, _release),
)
MEMORY_BY_NAME = {m.name: m for m in MEMORY_TYPES}


def allocate(name: str, pages: int, huge_page_size: int | None = None,
             noreserve: bool = False) -> Area:
    mt = MEMORY_BY_NAME[name]
    return mt.allocate(pages, mt.page_size(huge_page_size), noreserve)


def release(area: Area) -> None:
    MEMORY_BY_NAME[area.memory].release(area)
