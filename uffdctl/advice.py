"""Fixes and outlooks in one place: what to do about a finding, worded for where the user
stands.  Plain strings from plain data; the logic modules attach them to what they return."""

from __future__ import annotations

from .hugepages import HugePages


def reserve_hugepages(page_size: int) -> str:
    kb = page_size // 1024
    return (f"reserve some: sysctl vm.nr_hugepages=N (or write N to /sys/kernel/mm/hugepages/"
            f"hugepages-{kb}kB/nr_hugepages) as root")


def demo_minor_outlook(pools: HugePages, euid: int) -> str:
    """What the huge page state means for `uffdctl demo minor`, in one line."""
    pool = pools.pool()
    if pool is None:
        return "no huge page pool: `demo minor` needs --backing shmem"
    if pool.available > 0:
        return f"{pool.available} free {pool.size_kb} kB pages: `demo minor` can run as is"
    if euid == 0:
        return ("no free huge pages: `demo minor` reserves what it needs as root and gives it "
                "back afterwards")
    return ("no free huge pages: as root, `sysctl vm.nr_hugepages=N`; or run `demo minor "
            "--backing shmem`")


def not_offered(missing: list[str]) -> str:
    """Why the kernel does not offer these features, naming what is really missing: a kernel
    older than the release that added each, or, on a kernel new enough, the architecture or
    configuration that filters it out of UFFDIO_API (userfaultfd_api() in fs/userfaultfd.c
    drops the WP bits when the architecture does not select CONFIG_HAVE_ARCH_USERFAULTFD_WP
    or PTE markers are off, and the MINOR bits without CONFIG_HAVE_ARCH_USERFAULTFD_MINOR)."""
    import platform

    from . import abi, kconfig

    release, machine = platform.release(), platform.machine()
    cfg = kconfig.read()
    parts = []
    for key in missing:
        feat = abi.FEATURE_BY_KEY[key]
        symbol = feat.kconfig
        if not abi.release_at_least(release, feat.first):
            parts.append(f"{feat.name} (added in {feat.first})")
        elif cfg and symbol and cfg.values.get(symbol) == "n":
            parts.append(f"{feat.name} ({symbol} is not set in this {machine} kernel, "
                         f"read from {cfg.source})")
        else:
            parts.append(f"{feat.name} (this {machine} kernel's architecture or configuration "
                         "leaves it out" + (f": {symbol}" if symbol else "") + ")")
    return "this kernel does not offer " + ", ".join(parts)


def missing_features(what: str, memory: str, missing: list[str], works: list[str]
                     ) -> tuple[str, str]:
    """(cause, fix) when the kernel does not offer features `demo WHAT` needs on ``memory``.
    The fix names only what works from here: ``works``, the other backings of this demo whose
    needs are offered, or the release that adds what is missing."""
    import platform

    cause = f"{not_offered(missing)}: `demo {what}` cannot run on {memory} memory here"
    fixes = []
    if works:
        fixes.append("use " + " or ".join(f"--backing {w}" for w in works))
    newer = newer_kernel(missing)
    if newer:
        fixes.append(newer)
    elif not works:
        fixes.append(f"use a kernel built with this support for {platform.machine()}")
    return cause, "; or ".join(fixes)


def newer_kernel(missing: list[str]) -> str | None:
    """"use a kernel X or newer" when the running kernel predates a missing feature; None when
    it is new enough (then a newer release is no fix: the architecture or configuration is)."""
    import platform

    from . import abi

    firsts = [abi.FEATURE_BY_KEY[k].first for k in missing
              if not abi.release_at_least(platform.release(), abi.FEATURE_BY_KEY[k].first)]
    return f"use a kernel {max(firsts, key=abi.release_tuple)} or newer" if firsts else None
