"""/proc/PID/smaps as regions: the VmFlags decoded (userfaultfd modes first), the memory type.

The parser takes text, not a pid, so it can be tested on any input: it never raises on odd
content (lines it does not understand are skipped, unknown mnemonics are kept raw) because
/proc formats change between releases and a process may exit mid-read (truncated text).

Speed: a process may have ~65,000 mappings (a JVM, a VM with many memslots), 46 MB of smaps.
Looking for registered regions (``registered_only``, :func:`scan_registered`) finds the VmFlags
lines naming a userfaultfd mode and fully parses only those entries, so most of the text is
never split into fields; :func:`scan_registered` also reads it piece by piece.  An entry of
the shape the kernel prints is taken apart in bytes and its strings, flags and sizes are
looked up by those bytes (_Registered), since a process may have tens of thousands of
registered regions that mostly repeat one another; odd content goes to the general parse.

Memory: every region (``inspect --all``) is read piece by piece too (:func:`scan_all`), never
held whole (46 MB of text, twice once decoded), and a region is small: its strings (perms,
dev, path, flags) and its sizes are shared with the regions that have the same ones, and the
sizes are a tuple behind a shared index (:class:`Sizes`), not a dict of their own (~0.6 KB a
region instead of ~3.5 KB: 65,000 regions in ~40 MB).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from operator import attrgetter

from . import abi
from .records import field, record

TYPE_CHECKING = False  # as typing's, without importing typing (start-up)
if TYPE_CHECKING:
    from typing import Any

# A region header: "start-end perms offset dev inode [path]" (6.18 fs/proc/task_mmu.c
# show_map_vma()).  Addresses are 64-bit at most: a longer number is garbled text, skipped.
_HEADER = re.compile(
    r"^([0-9a-f]{1,16})-([0-9a-f]{1,16}) (\S{4}) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) ?(.*)$",
    re.MULTILINE)

# The register modes in the ABI's order: how modes are listed and ps's columns.
UFFD_MODE_ORDER = tuple(m.name for m in abi.REGISTER_MODES)


class Sizes(Mapping[str, int]):
    """An entry's "Name: N kB" lines (Size, Rss, KernelPageSize, ...), read only.

    Every entry of a process names the same fields, so the names and their positions are one
    dict shared by all of them (see _Shared) and each entry holds only its numbers, a tuple
    shared by the entries with the same numbers.  A name given twice (odd content) keeps its
    last number, as a dict would."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: tuple[int, ...]) -> None:
        self._index, self._values = index, values

    def __getitem__(self, key: str) -> int:
        return self._values[self._index[key]]

    def get(self, key: str, default: Any = None) -> Any:
        # Mapping.get goes through __getitem__ and a KeyError: the document asks three
        # times a region.
        at = self._index.get(key)
        return default if at is None else self._values[at]

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"Sizes({dict(self)!r})"


@record
class _Shared:
    """One copy of what many regions of a process have in common, for one parse: the
    regions keep references, the dicts go with the parse."""

    text: dict[str, str] = field(default_factory=dict)  # perms, dev, path
    # VmFlags line -> its mnemonics: one list, shared by the regions with that line
    flags: dict[str, list[str]] = field(default_factory=dict)
    index: dict[tuple[str, ...], dict[str, int]] = field(default_factory=dict)
    # (names, numbers) -> one Sizes (read only), shared by the regions with the same ones:
    # the document looks regions up by it (smaps.shape() and report_text()).
    made: dict[tuple[tuple[str, ...], tuple[int, ...]], Sizes] = field(default_factory=dict)

    def sizes(self, pairs: list[tuple[str, str]]) -> Sizes:
        names = tuple(k for k, _ in pairs)
        values = tuple(int(v) for _, v in pairs)
        sizes = self.made.get((names, values))
        if sizes is None:
            index = self.index.get(names)
            if index is None:
                index = self.index[names] = {k: i for i, k in enumerate(names)}
            sizes = self.made[(names, values)] = Sizes(index, values)
        return sizes


class Region:
    """One smaps entry.  A class of its own, not a dataclass: tens of thousands are made a
    run, and `dataclasses` costs every `inspect` and `ps` ~15 ms to import (issue 17).  The
    same constructor, fields, ``==`` and repr as @dataclass(slots=True) would give."""

    # In the constructor's order (repr, ==).
    FIELDS = ("start", "end", "perms", "offset", "dev", "inode", "path", "flags", "sizes_kb",
              "fs")
    __slots__ = (*FIELDS, "kind")

    def __init__(self, start: int, end: int, perms: str, offset: int, dev: str, inode: int,
                 path: str, flags: list[str] | None = None,
                 sizes_kb: Mapping[str, int] | None = None, fs: str = "",
                 kind: object = None) -> None:
        self.start, self.end, self.perms, self.offset = start, end, perms, offset
        self.dev, self.inode, self.path = dev, inode, path
        # The VmFlags mnemonics, in kernel order.  Regions whose entries read alike may share
        # one list (_Registered): read it, do not change it.
        self.flags: list[str] = [] if flags is None else flags
        # Size, Rss, KernelPageSize, ... in kB (a Sizes from the parser: see there)
        self.sizes_kb: Mapping[str, int] = {} if sizes_kb is None else sizes_kb
        self.fs = fs  # the backing file system's type where known (procs.py sets it)
        # Not a field (not in ==, repr): one object shared by the regions whose entries read
        # alike after their offset (_registered_in), so that shape() and kinds() know them
        # alike without looking at their fields; None where the parse did not say.
        self.kind = kind

    def _fields(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in Region.FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]  # mutable, compared by value

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in Region.FIELDS)
        return f"Region({inner})"

    @property
    def length(self) -> int:
        return self.end - self.start

    @property
    def modes(self) -> list[str]:
        """The userfaultfd modes the region is registered in ("um" -> missing, ...), in
        UFFD_MODE_ORDER."""
        return modes_of(self.flags)

    @property
    def registered(self) -> bool:
        # Every mnemonic of UFFD_MNEMONICS names a mode: registered when a mode is named.
        return bool(_modes(self.flags))

    @property
    def memory(self) -> str:
        return memory_type(self.flags, self.path, self.inode, self.fs)

    @property
    def kernel_page_size(self) -> int:
        """Bytes; 0 when the smaps entry did not say."""
        return self.sizes_kb.get("KernelPageSize", 0) * 1024


def modes_of(flags: Iterable[str]) -> list[str]:
    """The userfaultfd modes VmFlags mnemonics name, in UFFD_MODE_ORDER."""
    return list(_modes(flags))


# VmFlags lines -> their modes.  A process has few distinct VmFlags lines and each region's
# modes are asked for several times (registered, attribution, the document), so they are
# worked out once per line; the bound only keeps a long --watch of odd content in check.
_MODES: dict[tuple[str, ...], tuple[str, ...]] = {}


def _modes(flags: Iterable[str]) -> tuple[str, ...]:
    key = tuple(flags)
    modes = _MODES.get(key)
    if modes is None:
        if len(_MODES) >= 4096:
            _MODES.clear()
        found = {abi.UFFD_MNEMONICS[f] for f in key if f in abi.UFFD_MNEMONICS}
        modes = _MODES[key] = tuple(m for m in UFFD_MODE_ORDER if m in found)
    return modes


# File systems whose files are shmem to userfaultfd (vma_is_shmem(): their mappings use
# shmem_vm_ops, 6.18 mm/shmem.c) and hugetlb (hugetlbfs files always carry VM_HUGETLB, "ht").
SHMEM_FS = frozenset({"tmpfs"})
HUGETLB_FS = frozenset({"hugetlbfs"})


def memory_type(flags: list[str], path: str, inode: int, fs: str = "") -> str:
    """anon, shmem, hugetlb or file, as userfaultfd sees the mapping (which register modes
    and features apply).  Private mappings of shmem are still "shmem" to userfaultfd.

    The backing file system decides, not the path: a file on any tmpfs mount (/dev/shm,
    /run, a container's /tmp) is shmem.  memfd, SysV shm, shared /dev/zero and shared
    anonymous mappings live on the kernel's internal shm mount, which no mountinfo lists:
    those are known by the names the kernel gives them."""
    if "ht" in flags or fs in HUGETLB_FS:
        return "hugetlb"
    if fs in SHMEM_FS or path.startswith(("/memfd:", "/dev/zero", "/SYSV", "[anon_shmem:")):
        return "shmem"
    if not path or path.startswith("[") or inode == 0:
        return "anon"
    return "file"


def shape(r: Region) -> Hashable:
    """What a region's modes and memory type follow from (VmFlags, path, inode, file system),
    as a key for work done once per kind of region, not once per region (a process may have
    tens of thousands, mostly alike).  The flags list is keyed by identity: regions whose
    entries read alike share one (_Registered); regions with lists of their own are only
    looked at more often.  A region of a kind (Region.kind) is keyed by the kind's identity:
    its regions share device, inode, path and flags, so the file system that procs names by
    device too.  For keys held while the regions are, as ids are."""
    kind = r.kind
    return (id(r.flags), r.path, r.inode, r.fs) if kind is None else id(kind)


_KIND = attrgetter("kind")


def kinds(regions: list[Region]) -> dict[Hashable, Region]:
    """shape() -> one region of that shape, for each shape among ``regions``.  Regions of a
    kind are told apart in C (map, zip, dict), without a Python call per region: a process
    may have tens of thousands, of a handful of kinds (issue 17)."""
    found: dict[Hashable, Region] = dict(zip(map(id, map(_KIND, regions)), regions, strict=True))
    if found.pop(id(None), None) is not None:  # regions of no kind: one by one
        for r in regions:
            if r.kind is None:
                found.setdefault(shape(r), r)
    return found


class ModesOf:
    """region -> its modes (Region.modes, a tuple), worked out once per VmFlags list (kept,
    so that its id stays its own while this is)."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[int, tuple[list[str], tuple[str, ...]]] = {}

    def __call__(self, r: Region) -> tuple[str, ...]:
        known = self._known.get(id(r.flags))
        if known is None:
            known = self._known[id(r.flags)] = (r.flags, _modes(r.flags))
        return known[1]


class MemoryOf:
    """region -> its memory type (Region.memory), worked out once per shape() (the flags list
    kept, as in ModesOf)."""

    __slots__ = ("_known",)

    def __init__(self) -> None:
        self._known: dict[Hashable, tuple[list[str], str]] = {}

    def __call__(self, r: Region) -> str:
        key = shape(r)
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = (r.flags, r.memory)
        return known[1]


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
    + rb")(?![^ \n])[^\n]*")  # to the end of the line: where the entry ends


def _entry(header: re.Match[str], body: str, shared: _Shared) -> Region:
    start, end, perms, offset, dev, inode, path = header.groups()
    text = shared.text.setdefault
    path = path.strip()
    r = Region(int(start, 16), int(end, 16), text(perms, perms), int(offset, 16),
               text(dev, dev), int(inode), text(path, path))
    flags_at = body.rfind("VmFlags:")
    if flags_at >= 0:
        line_end = body.find("\n", flags_at)
        line = body[flags_at + 8:None if line_end < 0 else line_end]
        names = shared.flags.get(line)
        if names is None:
            names = shared.flags[line] = line.split()
        r.flags = names
    r.sizes_kb = shared.sizes(_SIZES.findall(body))
    return r


def _entries(text: str, headers: list[re.Match[str]], upto: int, shared: _Shared
             ) -> Iterator[Region]:
    """The regions of headers[:upto], each entry running to the next header (or the end)."""
    for k in range(upto):
        h = headers[k]
        yield _entry(h, text[h.end():headers[k + 1].start() if k + 1 < len(headers) else None],
                     shared)


def _parse_text(text: str) -> list[Region]:
    headers = list(_HEADER.finditer(text))
    return list(_entries(text, headers, len(headers), _Shared()))


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


# A registered entry as 6.18 prints it (show_map_vma(), show_smap(), show_smap_vma_flags()):
# the header line at the start of the stretch the general parse would read (from the line after
# the previous VmFlags line), then lines that each begin with a capital (field names: never a
# header, which begins with a hex digit; _BODY, checked once per distinct block), then the
# VmFlags line.  Anything else (odd lines, perms that are not 4 printable ASCII characters, an
# inode running into other text: str's \d would also take a following non-ASCII digit) goes
# to the general parse, so both give the same regions.  The header is matched in two parts:
# what differs from region to region (addresses, perms, offset: _ADDRESSES) and what many
# regions repeat (device, inode, path: _FILE), looked up with the body by their bytes.
_ADDRESSES = re.compile(rb"([0-9a-f]{1,16})-([0-9a-f]{1,16}) ([!-~]{4}) ([0-9a-f]+) ")
_FILE = re.compile(rb"([0-9a-f]+:[0-9a-f]+) ([0-9]+)(?: ([^\n]*))?\n")
_BODY = re.compile(rb"(?:[A-Z][^\n]*\n)*")

# What a registered region's entry says after its addresses, perms and offset: device, inode,
# path, the VmFlags mnemonics and the sizes.
_Rest = tuple[str, int, str, list[str], Sizes]


class _Registered:
    """What the registered entries of one parse share, keyed by their bytes as read: the
    decoded strings, the flags (None: not registered, or odd enough for the general parse)
    and the sizes, and whole entries but for their addresses, perms and offset (``rest``).
    A process's registered regions mostly repeat the same few of each, so after the first of
    a kind a region costs a regex match, three int() and one dict lookup (issue 17: ~30 us of
    Python a region at first, ~10 with the parts looked up one by one).

    Regions whose entries read alike share their flags list and their sizes (read them, do
    not change them): the document and the attribution look them up by identity."""

    __slots__ = ("flags", "paths", "rest", "shared", "sizes", "text")

    def __init__(self) -> None:
        self.shared = _Shared()
        self.text: dict[bytes, str] = {}  # perms, dev
        self.paths: dict[bytes | None, str] = {}
        self.flags: dict[bytes, list[str] | None] = {}
        self.sizes: dict[bytes, Sizes | None] = {}  # None: not lines of fields
        self.rest: dict[bytes, _Rest | None] = {}  # None: for the general parse

    def flags_of(self, line: bytes) -> list[str] | None:
        if line in self.flags:
            return self.flags[line]
        names = None
        # A second "VmFlags:" in the line: the general parse takes the text after the last
        # one; leave that to it.
        if b"VmFlags:" not in line:
            decoded = _decode(line)
            cached = self.shared.flags.get(decoded)
            if cached is None:
                cached = self.shared.flags[decoded] = decoded.split()
            if any(f in abi.UFFD_MNEMONICS for f in cached):
                names = cached
        self.flags[line] = names
        return names

    def sizes_of(self, block: bytes) -> Sizes | None:
        sizes = self.sizes.get(block, self)
        if sizes is self:
            # The VmFlags line of a registered entry never reads "N kB": the block alone
            # gives what the whole body gives.
            sizes = self.sizes[block] = (
                self.shared.sizes(_SIZES.findall(_decode(block))) if _BODY.fullmatch(block)
                else None)
        return sizes  # type: ignore[return-value]

    def path_of(self, rest: bytes | None) -> str:
        path = self.paths.get(rest)
        if path is None:
            path = self.paths[rest] = "" if rest is None else _decode(rest).strip()
        return path

    def text_of(self, raw: bytes) -> str:
        text = self.text.get(raw)
        if text is None:
            text = self.text[raw] = _decode(raw)
        return text

    def rest_of(self, tail: bytes) -> _Rest | None:
        """``tail``: an entry from just after its offset to the end of its VmFlags line, the
        last line, which begins a line."""
        flags_at = tail.rfind(b"\n") + 1
        f = _FILE.match(tail, 0, flags_at)
        if f is None:
            return None
        names = self.flags_of(tail[flags_at + 8:])
        sizes = self.sizes_of(tail[f.end():flags_at]) if names is not None else None
        if names is None or sizes is None:
            return None
        dev, inode, path = f.groups()
        return self.text_of(dev), int(inode), self.path_of(path), names, sizes


_UNSEEN = ("",)  # _registered_in(): an entry not looked at yet


def _registered_in(raw: bytes | bytearray, end: int, regions: list[Region],
                   known: _Registered | None = None) -> None:
    """Append the registered regions in raw[:end]."""
    if known is None:
        known = _Registered()
    # bytes, once: slices of it are the dict keys (of a bytearray, each would be copied twice).
    raw = raw[:end] if isinstance(raw, bytes) else bytes(memoryview(raw)[:end])
    addresses, rfind, find = _ADDRESSES.match, raw.rfind, raw.find
    rests, rest_of, append = known.rest, known.rest_of, regions.append
    texts, text_of = known.text, known.text_of  # text_of's dict read here: a call less
    for m in _REGISTERED_FLAGS.finditer(raw):
        # The entry runs from just after the previous VmFlags line to the end of this one;
        # its header is the last header line in that stretch (odd lines are skipped).
        at, stop = m.span()
        prev = rfind(b"\nVmFlags:", 0, at)
        begin = 0 if prev < 0 else find(b"\n", prev + 1) + 1
        a = addresses(raw, begin, at)
        if a is not None and raw[at - 1] == 10:  # VmFlags begins a line
            tail = raw[a.end():stop]
            rest = rests.get(tail, _UNSEEN)
            if rest is _UNSEEN:
                rest = rests[tail] = rest_of(tail)
            if rest is not None:
                start, finish, perms, offset = a.groups()
                dev, inode, path, names, sizes = rest  # type: ignore[misc]
                append(Region(int(start, 16), int(finish, 16),
                              texts.get(perms) or text_of(perms), int(offset, 16),
                              dev, inode, path, names, sizes, "", rest))
                continue
        found = _parse_text(_decode(raw[begin:stop]))
        if found and found[-1].registered:
            append(found[-1])


def scan_registered(readinto: Callable[[memoryview], int], chunk: int = 1 << 18
                    ) -> list[Region]:
    """The registered regions of smaps text read piece by piece with ``readinto`` (a file's
    readinto: 0 at the end).

    smaps of a big process is tens of MB: it goes through one reused buffer and is never held
    whole.  Each fill is scanned up to the end of its last VmFlags line (the last line of an
    entry, 6.18 fs/proc/task_mmu.c show_smap()); the rest moves to the front and waits for more.
    """
    regions: list[Region] = []
    known = _Registered()  # shared across fills
    buf = bytearray(chunk)
    filled = 0
    while True:
        if filled == len(buf):
            buf.extend(bytes(len(buf)))  # no VmFlags line in a whole buffer: odd content
        with memoryview(buf) as whole, whole[filled:] as free:
            n = readinto(free)
        if not n:
            _registered_in(buf, filled, regions, known)
            return regions
        end = filled + n
        last_line = buf.rfind(b"\n", 0, end)
        flags_at = buf.rfind(b"\nVmFlags:", 0, last_line) if last_line > 0 else -1
        if flags_at < 0:
            filled = end
            continue
        cut = buf.find(b"\n", flags_at + 1) + 1
        _registered_in(buf, cut, regions, known)
        buf[:end - cut] = buf[cut:end]
        filled = end - cut


def scan_all(readinto: Callable[[memoryview], int], chunk: int = 1 << 18) -> list[Region]:
    """Every region of smaps text read piece by piece with ``readinto`` (as scan_registered),
    the same regions as parse_smaps() of the whole text.

    Each fill is parsed up to the start of its last header line: every entry before it is
    whole (it ends where the next header begins); the last one, maybe cut short, moves to the
    front and waits for more.  Regions share their strings across fills (_Shared)."""
    regions: list[Region] = []
    shared = _Shared()
    buf = bytearray(chunk)
    filled = 0
    while True:
        if filled == len(buf):
            buf.extend(bytes(len(buf)))  # one entry longer than the buffer: odd content
        with memoryview(buf) as whole, whole[filled:] as free:
            n = readinto(free)
        end = filled + n
        text = _decode(buf[:end])
        headers = list(_HEADER.finditer(text))
        if not n:
            regions.extend(_entries(text, headers, len(headers), shared))
            return regions
        if len(headers) < 2:
            filled = end
            continue
        regions.extend(_entries(text, headers, len(headers) - 1, shared))
        # Back to bytes exactly as read (surrogateescape), a character cut at the end too.
        rest = text[headers[-1].start():].encode("utf-8", "surrogateescape")
        buf[:len(rest)] = rest
        filled = len(rest)
