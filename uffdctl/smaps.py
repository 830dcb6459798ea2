"""/proc/PID/smaps as regions: the VmFlags decoded (userfaultfd modes first), the memory type.

The parser takes text, not a pid, so it can be tested on any input: it never raises on odd
content (lines it does not understand are skipped, unknown mnemonics are kept raw) because
/proc formats change between releases and a process may exit mid-read (truncated text).

Speed: a process may have ~65,000 mappings (a JVM, a VM with many memslots), 46 MB of smaps.
Looking for registered regions (``registered_only``, :func:`scan_registered`) finds the VmFlags
lines naming a userfaultfd mode and fully parses only those entries, so most of the text is
never split into fields; :func:`scan_registered` also reads it piece by piece.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from . import abi

# A region header: "start-end perms offset dev inode [path]" (6.18 fs/proc/task_mmu.c
# show_map_vma()).  Addresses are 64-bit at most: a longer number is garbled text, skipped.
_HEADER = re.compile(
    r"^([0-9a-f]{1,16})-([0-9a-f]{1,16}) (\S{4}) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) ?(.*)$",
    re.MULTILINE)

# The register modes in the ABI's order: how modes are listed and ps's columns.
UFFD_MODE_ORDER = tuple(m.name for m in abi.REGISTER_MODES)


@dataclass
class Region:
    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str
    flags: list[str] = field(default_factory=list)  # the VmFlags mnemonics, in kernel order
    sizes_kb: dict[str, int] = field(default_factory=dict)  # Size, Rss, KernelPageSize, ...

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def modes(self) -> list[str]:
        """The userfaultfd modes the region is registered in ("um" -> missing, ...), in
        UFFD_MODE_ORDER."""
        found = {abi.UFFD_MNEMONICS[f] for f in self.flags if f in abi.UFFD_MNEMONICS}
        return [m for m in UFFD_MODE_ORDER if m in found]

    @property
    def registered(self) -> bool:
        return any(f in abi.UFFD_MNEMONICS for f in self.flags)

    @property
    def memory(self) -> str:
        return memory_type(self.flags, self.path, self.inode)

    @property
    def kernel_page_size(self) -> int:
        """Bytes; 0 when the smaps entry did not say."""
        return self.sizes_kb.get("KernelPageSize", 0) * 1024


def memory_type(flags: list[str], path: str, inode: int) -> str:
    """anon, shmem, hugetlb or file, as userfaultfd sees the mapping (which register modes
    and features apply).  Private mappings of shmem are still "shmem" to userfaultfd."""
    if "ht" in flags:
        return "hugetlb"
    if path.startswith(("/memfd:", "/dev/zero", "/SYSV", "[anon_shmem:")):
        return "shmem"
    if not path or path.startswith("[") or inode == 0:
        return "anon"
    return "file"


def decode_flags(flags: list[str]) -> list[tuple[str, str, str]]:
    """(mnemonic, kernel flag name, meaning) for each mnemonic; unknown ones kept raw."""
    out = []
    for f in flags:
        v = abi.VMFLAG_BY_MNEMONIC.get(f)
        out.append((f, v.flag, v.meaning) if v else (f, "", "unknown to uffdctl (newer kernel?)"))
    return out


_SIZES = re.compile(r"^(\w+):\s+(\d+) kB$", re.MULTILINE)
# A VmFlags line naming a userfaultfd mode (6.18 fs/proc/task_mmu.c show_smap_vma_flags()
# prints each mnemonic followed by a space): found by the regex engine's literal-prefix scan,
# far faster than looking at every entry from Python.  The alternation of the modes'
# mnemonics scans as fast as the class "u[imrw]" it replaces (27 ms for 8 MB either way).
_REGISTERED_FLAGS = re.compile(
    rb"VmFlags:[^\n]*? (?:"
    + "|".join(re.escape(m.mnemonic) for m in abi.REGISTER_MODES).encode()
    + rb")(?:[ \n]|$)")


def _entry(header: re.Match[str], body: str) -> Region:
    start, end, perms, offset, dev, inode, path = header.groups()
    r = Region(int(start, 16), int(end, 16), perms, int(offset, 16), dev, int(inode),
               path.strip())
    flags_at = body.rfind("VmFlags:")
    if flags_at >= 0:
        line_end = body.find("\n", flags_at)
        r.flags = body[flags_at + 8:None if line_end < 0 else line_end].split()
    r.sizes_kb = {k: int(v) for k, v in _SIZES.findall(body)}
    return r


def _parse_text(text: str) -> list[Region]:
    headers = list(_HEADER.finditer(text))
    return [_entry(h, text[h.end():headers[k + 1].start() if k + 1 < len(headers) else None])
            for k, h in enumerate(headers)]


def _decode(data: bytes | bytearray) -> str:
    return data.decode("utf-8", "surrogateescape")


def parse_smaps(data: str | bytes, registered_only: bool = False) -> list[Region]:
    """Regions in address order.  ``registered_only``: only regions carrying um/uw/ui/ur."""
    if not registered_only:
        return _parse_text(data if isinstance(data, str) else _decode(data))
    raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    regions: list[Region] = []
    _registered_in(raw, len(raw), regions)
    return regions


def _registered_in(raw: bytes | bytearray, end: int, regions: list[Region]) -> None:
    """Append the registered regions in raw[:end]."""
    for m in _REGISTERED_FLAGS.finditer(raw, 0, end):
        # The entry runs from just after the previous VmFlags line to the end of this one;
        # its header is the last header line in that stretch (odd lines are skipped).
        prev = raw.rfind(b"\nVmFlags:", 0, m.start())
        begin = 0 if prev < 0 else raw.find(b"\n", prev + 1) + 1
        line_end = raw.find(b"\n", m.start(), end)
        found = _parse_text(_decode(raw[begin:end if line_end < 0 else line_end]))
        if found and found[-1].registered:
            regions.append(found[-1])


def scan_registered(readinto: Callable[[memoryview], int], chunk: int = 1 << 18
                    ) -> list[Region]:
    """The registered regions of smaps text read piece by piece with ``readinto`` (a file's
    readinto: 0 at the end).

    smaps of a big process is tens of MB: it goes through one reused buffer and is never held
    whole.  Each fill is scanned up to the end of its last VmFlags line (the last line of an
    entry, 6.18 fs/proc/task_mmu.c show_smap()); the rest moves to the front and waits for more.
    """
    regions: list[Region] = []
    buf = bytearray(chunk)
    filled = 0
    while True:
        if filled == len(buf):
            buf.extend(bytes(len(buf)))  # no VmFlags line in a whole buffer: odd content
        with memoryview(buf) as whole, whole[filled:] as free:
            n = readinto(free)
        if not n:
            _registered_in(buf, filled, regions)
            return regions
        end = filled + n
        last_line = buf.rfind(b"\n", 0, end)
        flags_at = buf.rfind(b"\nVmFlags:", 0, last_line) if last_line > 0 else -1
        if flags_at < 0:
            filled = end
            continue
        cut = buf.find(b"\n", flags_at + 1) + 1
        _registered_in(buf, cut, regions)
        buf[:end - cut] = buf[cut:end]
        filled = end - cut
