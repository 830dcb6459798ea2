"""The running kernel's build configuration, from wherever the distribution put it.

Kept apart from the ABI and the probe, as drgn keeps its kconfig helper apart: the places
differ by distribution, not by kernel release.

- /proc/config.gz: CONFIG_IKCONFIG_PROC=y (this is rare on distribution kernels);
- /boot/config-RELEASE: Debian and Ubuntu (their kernels set `# CONFIG_IKCONFIG is not set`);
- /lib/modules/RELEASE/config: Fedora, Arch and others install a copy there.

The first that can be read wins, and the answer says which file it was.

A symbol the file does not mention at all is either off (an option the architecture does not
select is never written, not even as "is not set") or one that did not exist yet in that
release: CONFIG_HAVE_ARCH_USERFAULTFD_MINOR came with 5.13, so Debian's 5.10 has no line for
it.  :func:`not_in_release` tells the two apart from the release that added each symbol, taken
from the ABI tables (the features and modes each symbol gates).
"""

from __future__ import annotations

import functools

from . import abi
from .records import NamedTuple

# The symbols `probe` reports: userfaultfd itself, every symbol the ABI tables say gates a
# feature or a mode, then the ones the other commands depend on (hugetlbfs pools, smaps and
# pagemap, soft-dirty).
SYMBOLS: tuple[str, ...] = tuple(dict.fromkeys(
    ["CONFIG_USERFAULTFD"]
    + [f.kconfig for f in abi.FEATURES if f.kconfig]
    + [row.kconfig for row in abi.MODE_SUPPORT]
    + ["CONFIG_HUGETLBFS", "CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_PROC_PAGE_MONITOR",
       "CONFIG_MEM_SOFT_DIRTY"]))


class Config(NamedTuple):
    """Symbol values ("y", "m", a string, or "n" when unset) and the file they came from;
    ``absent``: the symbols the file has no line for (neither set nor "is not set")."""

    source: str
    values: dict[str, str]
    absent: frozenset[str] = frozenset()


def symbol_first(symbol: str) -> str | None:
    """The release that added ``symbol``: the earliest release of what it gates in the ABI
    tables (abi.FEATURES, abi.MODE_SUPPORT); None for a symbol they do not gate."""
    firsts = [f.first for f in abi.FEATURES if f.kconfig == symbol]
    firsts += [r.first for r in abi.MODE_SUPPORT if r.kconfig == symbol]
    return min(firsts, key=abi.release_order) if firsts else None


def not_in_release(cfg: Config, release: str | None = None) -> dict[str, str]:
    """The symbols of ``cfg`` that the kernel ``release`` predates: absent from its file and
    added in a later release (symbol -> that release).  Such a symbol is not "not set": the
    kernel has no such option at all."""
    release = release or abi.release()
    out = {}
    for symbol in (s for s in cfg.values if s in cfg.absent):
        first = symbol_first(symbol)
        if first is not None and not abi.release_at_least(release, first):
            out[symbol] = first
    return out


def candidates(release: str | None = None) -> tuple[str, ...]:
    release = release or abi.release()
    return ("/proc/config.gz", f"/boot/config-{release}", f"/lib/modules/{release}/config")


@functools.cache
def _text(release: str) -> tuple[str, str] | None:
    """(path, "\\n" + contents) of the first readable configuration, read once per process."""
    import zlib

    for path in candidates(release):
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if path.endswith(".gz"):
            try:
                # One decompression of the whole file: reading it line by line through
                # gzip.open costs milliseconds, the start-up budget of `probe --json`.
                raw = zlib.decompress(raw, 16 + zlib.MAX_WBITS)
            except zlib.error:
                continue
        return path, "\n" + raw.decode("utf-8", "replace")
    return None


def read(symbols: tuple[str, ...] = SYMBOLS, release: str | None = None) -> Config | None:
    """The values of ``symbols``; None when the kernel's configuration is nowhere to be read."""
    found = _text(release or abi.release())
    if found is None:
        return None
    path, text = found
    values = {}
    absent = set()
    for symbol in symbols:
        at = text.find(f"\n{symbol}=")
        if at < 0:
            values[symbol] = "n"  # "# CONFIG_X is not set", or not there at all
            if f"\n# {symbol} is not set" not in text:
                absent.add(symbol)
        else:
            start = at + len(symbol) + 2
            end = text.find("\n", start)
            values[symbol] = text[start:None if end < 0 else end].strip()
    return Config(path, values, frozenset(absent))
