"""What the page tables hold for the pages a demo works on, read from /proc/self/pagemap.

The demos narrate kernel state ("nothing is mapped yet", "the same page as the plain
mapping", "write-protected"); each such claim is a reading from here, made before the
touchers start or after they are done, never on the fault path.  Logic only: a reading is
plain data (:class:`Reading`), and :func:`describe` is the sentence the narration shows.

What an entry can say (Documentation/admin-guide/mm/pagemap.rst; abi.PM_* has the bits):
present (63), swapped (62), uffd write-protected (57, from 5.14), and the page frame number
(0-54), which the kernel shows only to a reader holding CAP_SYS_ADMIN (4.2).  pagemap has one
entry per base page, a huge page included: the entries of one huge page are alike but for the
frame, which counts up from the head page's (pagemap_hugetlb_range() in fs/proc/task_mmu.c),
so the first base page's entry stands for the huge page.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field

from . import abi

BASE_PAGE = os.sysconf("SC_PAGE_SIZE")
PFN_HIDDEN = "page frames hidden (needs CAP_SYS_ADMIN)"
NO_WP_BIT = f"pagemap has no uffd-wp bit before Linux {abi.PM_UFFD_WP_FIRST}"


@dataclass(frozen=True)
class Expect:
    """What the narration claims for every page of a mapping."""

    present: bool
    wp: frozenset[int] | None = None  # the pages whose uffd-wp bit is set (None: not claimed)
    frames: tuple[int, ...] | None = None  # the frames the pages are at (another mapping's)


@dataclass
class Reading:
    """One mapping's pages as pagemap showed them at one moment of the demo."""

    phase: str  # "before" (the first touch) or "after" (the faults were resolved)
    mapping: str  # "plain" or "registered"
    address: int
    length: int
    pages: int
    page_size: int
    present: int  # pages with a present page table entry
    swapped: int  # pages swapped out (not present, but not empty either)
    uffd_wp: int | None  # pages with the uffd-wp bit; None: this kernel has no such bit
    same_frame: int | None  # pages at the frame expected (Expect.frames); None: not compared
    pfn_visible: bool  # the kernel showed this reader the page frame numbers
    unexpected: list[int]  # the page indexes that are not as Expect says
    entries: list[int] = field(default_factory=list, repr=False)  # the raw entries

    @property
    def frames(self) -> tuple[int, ...]:
        """Each page's frame number (0: not present, or hidden from this reader)."""
        return tuple(e & abi.PM_PFRAME_MASK if e & abi.PM_PRESENT else 0 for e in self.entries)

    def wp_pages(self) -> list[int]:
        """The pages whose uffd-wp bit is set."""
        return [i for i, e in enumerate(self.entries) if e & abi.PM_UFFD_WP]

    def fields(self) -> dict[str, object]:
        """The reading as JSON fields (demo.STEPS["pagetables"])."""
        return {"phase": self.phase, "mapping": self.mapping, "address": self.address,
                "length": self.length, "pages": self.pages, "page_size": self.page_size,
                "present": self.present, "swapped": self.swapped, "uffd_wp": self.uffd_wp,
                "same_frame": self.same_frame, "pfn_visible": self.pfn_visible,
                "unexpected": list(self.unexpected)}


def read_entries(addr: int, pages: int, page_size: int) -> list[int]:
    """The pagemap entry of the first base page of each of ``pages`` pages of ``page_size``
    from ``addr``: one read() for them all (the kernel walks the range once), whatever the
    page size.  OSError when /proc/self/pagemap cannot be read."""
    stride = max(1, page_size // BASE_PAGE)
    count = pages * stride * abi.PAGEMAP_ENTRY_SIZE
    fd = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        raw = os.pread(fd, count, addr // BASE_PAGE * abi.PAGEMAP_ENTRY_SIZE)
    finally:
        os.close(fd)
    if len(raw) != count:
        raise OSError(5, f"pagemap: read {len(raw)} of {count} bytes")
    # Entries are u64 in the kernel's byte order, which is this process's.
    return list(memoryview(raw).cast("Q")[::stride])


def pfns_shown() -> bool:
    """Does the kernel show this process page frame numbers?  Asked of the kernel: the entry
    of a page this process has just written (ctypes zero-fills the buffer, so its page is
    mapped) carries a frame number only for a reader with CAP_SYS_ADMIN."""
    buf = ctypes.create_string_buffer(8)
    entry = read_entries(ctypes.addressof(buf), 1, BASE_PAGE)[0]
    return bool(entry & abi.PM_PRESENT and entry & abi.PM_PFRAME_MASK)


def wp_bit_known(entries: list[int], release: str) -> bool:
    """Can a clear bit 57 be believed?  On 5.14 and later, or where the bit shows anywhere
    (a kernel that carries the commit without the release)."""
    return abi.release_at_least(release, abi.PM_UFFD_WP_FIRST) or \
        any(e & abi.PM_UFFD_WP for e in entries)


def summarize(phase: str, mapping: str, addr: int, pages: int, page_size: int,
              entries: list[int], expect: Expect, release: str,
              pfn_visible: bool | None = None) -> Reading:
    """A reading from raw entries (one per page) and what the narration claims of them.
    ``pfn_visible``: whether frames are shown, when no page is present to tell (None: ask
    the kernel, pfns_shown())."""
    present = [bool(e & abi.PM_PRESENT) for e in entries]
    frames = [e & abi.PM_PFRAME_MASK if e & abi.PM_PRESENT else 0 for e in entries]
    wp = [bool(e & abi.PM_UFFD_WP) for e in entries]
    # The kernel shows every frame of a read or none (show_pfn is per read): a present page
    # says which; with none present, ask.
    visible = any(frames)
    if not any(present):
        visible = pfns_shown() if pfn_visible is None else pfn_visible
    known = wp_bit_known(entries, release)
    want = expect.frames if visible else None  # hidden frames are all 0: nothing to compare
    unexpected = []
    for i in range(len(entries)):
        wrong = present[i] != expect.present
        if expect.wp is not None and known:
            wrong |= wp[i] != (i in expect.wp)
        if want is not None:
            wrong |= not present[i] or frames[i] != want[i]
        if wrong:
            unexpected.append(i)
    same = None if want is None else \
        sum(1 for i in range(len(entries)) if present[i] and frames[i] and frames[i] == want[i])
    return Reading(phase, mapping, addr, pages * page_size, pages, page_size, sum(present),
                   sum(1 for e in entries if e & abi.PM_SWAP),
                   sum(wp) if known else None, same, visible, unexpected, list(entries))


def read(phase: str, mapping: str, addr: int, pages: int, page_size: int, expect: Expect,
         release: str | None = None) -> Reading:
    """Read ``pages`` pages of ``page_size`` at ``addr`` from pagemap and summarize them."""
    return summarize(phase, mapping, addr, pages, page_size,
                     read_entries(addr, pages, page_size), expect,
                     release if release is not None else os.uname().release)


# ----- what the narration says ----------------------------------------------------------------

def size_text(n: int) -> str:
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "kB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n} bytes"


def page_list(pages: list[int], limit: int = 12) -> str:
    shown = ", ".join(str(p) for p in pages[:limit])
    return shown + (f" and {len(pages) - limit} more" if len(pages) > limit else "")


def describe(r: Reading, when: str, expect: Expect, frames_of: str = "") -> str:
    """The step's sentence: what was read, in the terms of the claim it backs.  ``when``
    says the moment ("before the first touch"); ``frames_of`` names the mapping whose frames
    Expect.frames holds."""
    text = (f"pagemap {when}: {r.mapping} mapping 0x{r.address:x}+{size_text(r.length)}: "
            f"{r.present} of {r.pages} pages present")
    if r.present == 0 and r.swapped == 0 and not expect.present:
        text += " (no page table entries yet)"
    elif r.swapped:
        text += f", {r.swapped} swapped out"
    if expect.wp is not None:
        if r.uffd_wp is None:
            text += f"; uffd-wp bit unknown: {NO_WP_BIT}"
        elif len(expect.wp) == r.pages:
            text += f"; uffd-wp (bit 57) set on {r.uffd_wp} of {r.pages}"
        else:
            # Expect.wp holds the pages still protected: the others were written.
            wp = set(r.wp_pages())
            others = len(expect.wp)
            clear = sum(1 for i in range(r.pages) if i not in expect.wp and i not in wp)
            kept = sum(1 for i in expect.wp if i in wp)
            text += (f"; uffd-wp (bit 57) clear on {clear} of the {r.pages - others} written "
                     f"pages, still set on {kept} of the {others} others")
    if expect.frames is not None:
        text += (f"; same page frames as the {frames_of} mapping: {r.same_frame} of "
                 f"{r.pages}" if r.same_frame is not None else f"; {PFN_HIDDEN}")
    if r.unexpected:
        text += f"; not as expected: page{'s' if len(r.unexpected) > 1 else ''} " \
            f"{page_list(r.unexpected)}"
    return text


def disagreement(readings: list[Reading]) -> str | None:
    """The run's error when a reading contradicts the narration (None: none does)."""
    wrong = [r for r in readings if r.unexpected]
    if not wrong:
        return None
    return "; ".join(f"pagemap {r.phase}: {r.mapping} mapping pages {page_list(r.unexpected)} "
                     "not as the demo says" for r in wrong)
