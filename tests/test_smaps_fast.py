"""The fast path for registered regions (smaps._registered_in: kernel-shaped entries matched in
bytes, their strings, flags and sizes shared) gives exactly what a plain parse gives: checked
on generated smaps text with registered and unregistered entries, odd lines, odd headers, a
truncated last entry and every VmFlags mnemonic, read whole and piece by piece.  No timing
here (speed is measured in benchmarks/inspect_bench.py)."""

from __future__ import annotations

import io
import json
import random
import re
from typing import Any

import pytest
from smaps_util import short_reads

from uffdctl import abi, fdinfo, procs, smaps

MNEMONICS = sorted(abi.VMFLAG_BY_MNEMONIC)
UFFD = sorted(abi.UFFD_MNEMONICS)
FIELDS = ["Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty", "Shared_Clean",
          "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced", "Anonymous", "KSM",
          "LazyFree", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb",
          "Private_Hugetlb", "Swap", "SwapPss", "Locked"]
PATHS = ["", "", "/usr/lib/libc.so.6", "[heap]", "[stack]", "/memfd:guest (deleted)",
         "/path with  spaces ", "/中文/文件", "/nb\u00a0sp\u00a0", "/x\u2028y", "/tab\tend",
         "[anon:名前]", "/dev/zero", "/SYSV00000000", "/a VmFlags: um b"]
# Lines a kernel never prints, anywhere in an entry (the parse must skip them alike).
ODD_LINES = ["", "garbage", "   ", "lower: 4 kB", "Bogus:   12 kB", "Size: x kB", "Rss: 4 MB",
             "THPeligible:    1", "ProtectionKey:  0", "deadbeef not a header",
             "7f00-7f01 rw-p", "Ünïcode: 4 kB", "Size:\t\t4 kB"]


def header(start: int, end: int, rng: random.Random) -> str:
    path = rng.choice(PATHS)
    perms = rng.choice(["rw-p", "r--p", "rw-s", "---p", "r-xp"])
    inode = rng.randrange(1, 1 << 24) if path.startswith("/") else 0
    text = f"{start:x}-{end:x} {perms} {rng.randrange(1 << 20):08x} fe:{rng.randrange(4):02x} " \
           f"{inode}"
    return text + (" " * max(1, 73 - len(text)) + path if path else " ")


def flags_line(rng: random.Random, registered: bool) -> str:
    names = rng.sample(MNEMONICS, rng.randrange(0, 8))
    names = [n for n in names if n not in UFFD]
    if registered:
        names += rng.sample(UFFD, rng.randrange(1, len(UFFD) + 1))
    rng.shuffle(names)
    return "VmFlags: " + "".join(n + " " for n in names)


def entry(start: int, end: int, rng: random.Random, registered: bool, odd: float) -> list[str]:
    lines = [header(start, end, rng)]
    size_kb = (end - start) // 1024
    for name in FIELDS:
        if rng.random() < 0.03:
            continue  # a field left out (older or newer kernels)
        value = size_kb if name == "Size" else rng.choice([0, 0, 0, 4, size_kb])
        lines.append(f"{name + ':':16}{value:8} kB")
    lines.append("THPeligible:    0")
    while rng.random() < odd:
        lines.insert(rng.randrange(1, len(lines) + 1), rng.choice(ODD_LINES))
    lines.append(flags_line(rng, registered))
    return lines


def smaps_text(n: int, seed: int, registered: float = 0.4, odd: float = 0.0,
               truncate: bool = True) -> str:
    """/proc/PID/smaps for ``n`` entries, ``registered`` of them registered; with ``odd``,
    odd lines sprinkled in; the last entry cut short somewhere."""
    rng = random.Random(seed)
    out, addr = [], 0x7F0000000000
    for _ in range(n):
        size = rng.choice([1, 1, 2, 16]) * 4096
        # Registered entries tend to repeat one another (the fast path shares them): some
        # the same but for the address.
        out += entry(addr, addr + size, rng, rng.random() < registered, odd)
        addr += size + rng.choice([0, 4096])
    text = "\n".join(out) + "\n"
    if truncate:
        text = text[:len(text) - rng.randrange(1, 600)]
    return text


# ----- the reference: plain and slow ------------------------------------------------------------

REF_HEADER = re.compile(
    r"([0-9a-f]{1,16})-([0-9a-f]{1,16}) (\S{4}) ([0-9a-f]+) ([0-9a-f]+:[0-9a-f]+) (\d+) ?(.*)")
REF_SIZE = re.compile(r"(\w+):\s+(\d+) kB")


def reference(text: str) -> list[tuple[Any, ...]]:
    """Every registered region, line by line: a header line starts an entry, every other
    line belongs to it; the flags are the words after its VmFlags:, the sizes its "Name: N kB"
    lines (a name given twice keeps its last number)."""
    regions = []
    current: list[Any] | None = None
    for line in text.split("\n") + [None]:
        h = REF_HEADER.fullmatch(line) if line is not None else None
        if line is None or h:
            if current is not None:
                flags = current[7]
                if any(f in abi.UFFD_MNEMONICS for f in flags):
                    regions.append(tuple(current))
            if line is None:
                break
            assert h is not None
            start, end, perms, offset, dev, inode, path = h.groups()
            current = [int(start, 16), int(end, 16), perms, int(offset, 16), dev, int(inode),
                       path.strip(), [], {}]
            continue
        if current is None:
            continue
        if line.startswith("VmFlags:"):
            current[7] = line[len("VmFlags:"):].split()
        elif m := REF_SIZE.fullmatch(line):
            current[8][m.group(1)] = int(m.group(2))
    return regions


def as_tuples(regions: list[smaps.Region]) -> list[tuple[Any, ...]]:
    return [(r.start, r.end, r.perms, r.offset, r.dev, r.inode, r.path, r.flags,
             dict(r.sizes_kb)) for r in regions]


def identical(got: list[smaps.Region], want: list[tuple[Any, ...]]) -> None:
    """The same values of the same types, and the same document fields, byte for byte."""
    assert repr(as_tuples(got)) == repr(want)
    doc = [{"modes": r.modes, "memory": r.memory, "flags": r.flags, "path": r.path,
            "size_kb": r.sizes_kb.get("Size"), "rss_kb": r.sizes_kb.get("Rss"),
            "kernel_page_size": r.kernel_page_size} for r in got]
    ref = [{"modes": smaps.modes_of(w[7]), "memory": smaps.memory_type(w[7], w[6], w[5]),
            "flags": w[7], "path": w[6], "size_kb": w[8].get("Size"), "rss_kb": w[8].get("Rss"),
            "kernel_page_size": w[8].get("KernelPageSize", 0) * 1024} for w in want]
    assert json.dumps(doc, ensure_ascii=False).encode() == \
        json.dumps(ref, ensure_ascii=False).encode()


def pieces(raw: bytes, chunk: int, seed: int) -> list[smaps.Region]:
    """scan_registered over short reads of random length, as /proc hands them out."""
    return smaps.scan_registered(short_reads(raw, random.Random(seed), 3000), chunk=chunk)


@pytest.mark.parametrize("seed", range(6))
def test_fast_path_is_the_reference(seed: int) -> None:
    text = smaps_text(1500, seed, odd=0.05 if seed % 2 else 0.0)
    want = reference(text)
    assert len(want) > 300
    raw = text.encode("utf-8", "surrogateescape")
    identical(smaps.parse_smaps(raw, registered_only=True), want)
    identical(smaps.parse_smaps(text, registered_only=True), want)
    for chunk in (64, 4096, 1 << 18):
        identical(pieces(raw, chunk, seed), want)
    identical(smaps.scan_registered(io.BytesIO(raw).readinto), want)


def test_every_mnemonic_and_every_mode() -> None:
    lines = []
    for k, name in enumerate(MNEMONICS + ["??", "zz"]):
        start = 0x10000 + k * 0x2000
        for mode in UFFD:
            lines += [f"{start:x}-{start + 0x1000:x} rw-p 00000000 00:00 0 ", "Size: 4 kB",
                      f"VmFlags: rd {name} {mode} "]
            start += 0x1000000
    text = "\n".join(lines) + "\n"
    want = reference(text)
    assert len(want) == len(lines) // 3
    identical(smaps.parse_smaps(text.encode(), registered_only=True), want)


def test_shared_strings_and_sizes() -> None:
    body = [f"{name + ':':16}{4 if name in ('Size', 'KernelPageSize') else 0:8} kB"
            for name in FIELDS]
    lines = []
    for k in range(300):  # like entries (untouched pages of a guest): one of each kind
        lines += [f"{0x10000 + k * 0x2000:x}-{0x11000 + k * 0x2000:x} rw-p 00000000 00:00 0 ",
                  *body, "VmFlags: rd wr mr mw me ac um "]
    for registered_only in (True, False):  # inspect, and inspect --all
        regions = smaps.parse_smaps("\n".join(lines) + "\n", registered_only=registered_only)
        assert len(regions) == 300
        assert len({id(r.perms) for r in regions}) == 1
        # One Sizes and one flags list for entries alike (documented: read, not changed):
        # the document and the attribution look regions up by them.
        assert len({id(r.sizes_kb) for r in regions}) == 1
        assert len({id(r.flags) for r in regions}) == 1


@pytest.mark.parametrize("seed", range(3))
def test_kinds_attribution_and_counts_are_those_of_each_region(seed: int) -> None:
    # Attribution and ps's counts are worked out once per kind of region (smaps.kinds(),
    # procs.by_mode()): they must say for each region what a look at that region alone says.
    # The fast parse gives its regions a kind; copies without one take the slow way.
    text = smaps_text(1500, seed, odd=0.05 if seed % 2 else 0.0)
    regions = smaps.scan_registered(io.BytesIO(text.encode("utf-8", "surrogateescape")).readinto)
    # Odd entries go through the general parse, which gives no kind.
    kinded = sum(r.kind is not None for r in regions)
    assert kinded == len(regions) if seed % 2 == 0 else 0 < kinded < len(regions)
    plain = [smaps.Region(*(getattr(r, f) for f in smaps.Region.FIELDS)) for r in regions]
    assert plain == regions and all(r.kind is None for r in plain)
    uffds = [fdinfo.UffdDescriptor(3, fdinfo.parse_fdinfo("API:\taa:80000100:0\n")),
             fdinfo.UffdDescriptor(4, fdinfo.parse_fdinfo("API:\taa:80000400:0\n")),
             fdinfo.UffdDescriptor(5, fdinfo.parse_fdinfo("API:\taa:80000002:0\n"))]
    for some in (regions, plain, regions[::2] + plain[1::2]):
        kinds = smaps.kinds(some)
        assert set(kinds) == {smaps.shape(r) for r in some}
        owners = procs.attribute(some, uffds)
        for r in some:
            alone = procs.attribute([r], uffds).of(r)
            got = owners.of(r)
            assert (got.fds, got.certain) == (alone.fds, alone.certain)  # type: ignore[union-attr]
        count: dict[str, int] = {}
        size: dict[str, int] = {}
        for r in some:
            for m in r.modes:
                count[m] = count.get(m, 0) + 1
                size[m] = size.get(m, 0) + r.length
        got_count, got_size = procs.by_mode(some)
        assert (got_count, got_size) == (count, size)
        assert list(got_count) == list(got_size) == [m for m in smaps.UFFD_MODE_ORDER
                                                     if m in count]


# Content a kernel never prints, where the plain reference above and the parse part ways
# (a "VmFlags:" in the middle of a line, a non-ASCII digit after the inode, non-UTF-8 bytes):
# the fast path must still give what the general parse gives, which is what `inspect` showed
# before it existed.
WILD = [b"Foo: VmFlags: um ", b"VmFlags: rd VmFlags: um ", b"VmFlags: um VmFlags: uw ",
        b"7f00-7f01 rw-p 00000000 00:00 12\xd9\xa3 /arabic-digit",
        b"7f00-7f01 r\xc3\xa9-p 00000000 00:00 0 ", b"7f00-7f01 rw-p 00000000 00:00 0 /\xff\xfe",
        b"7f00-7f01 rw-p 00000000 00:00 0 /nel\xc2\x85", b"VmFlags: rd \xc2\x85um ",
        b"VmFlags: rd um\xc2\xa0", b"00000000000000000-1 rw-p 0 0:0 0"]


def general(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    with monkeypatch.context() as m:
        m.setattr(smaps, "_ADDRESSES", re.compile(rb"(?!)"))  # never matches: all general
        return as_tuples(smaps.parse_smaps(raw, registered_only=True))


@pytest.mark.parametrize("seed", range(4))
def test_wild_content_is_the_general_parse(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    lines = smaps_text(600, seed, registered=0.6, odd=0.05).encode().split(b"\n")
    for _ in range(120):
        lines.insert(rng.randrange(len(lines)), rng.choice(WILD))
    raw = b"\n".join(lines)
    want = general(raw, monkeypatch)
    assert len(want) > 200
    assert repr(as_tuples(smaps.parse_smaps(raw, registered_only=True))) == repr(want)
    for chunk in (64, 1 << 18):
        assert repr(as_tuples(pieces(raw, chunk, seed))) == repr(want)
