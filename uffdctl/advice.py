"""Fixes and outlooks in one place: what to do about a finding, worded for where the user
stands.  Plain strings from plain data; the logic modules attach them to what they return."""

from __future__ import annotations

from collections.abc import Sequence

from .hugepages import HugePages, Leftover, Shortfall, default_size_kb

DEMO_MINOR_PAGES = 16  # `demo minor` as is: 8 pages, and as many for the floor's mapping


def pool_command(size_kb: int, count: int | str) -> str:
    """The command that sets the size of the pool of ``size_kb`` pages: vm.nr_hugepages is
    only the default size's pool; any other size has its own file in sysfs."""
    if size_kb == default_size_kb():
        return f"sysctl vm.nr_hugepages={count}"
    return f"echo {count} > /sys/kernel/mm/hugepages/hugepages-{size_kb}kB/nr_hugepages"


def reserve_hugepages(page_size: int) -> str:
    kb = page_size // 1024
    if kb == default_size_kb():
        return (f"reserve some: sysctl vm.nr_hugepages=N (or write N to /sys/kernel/mm/"
                f"hugepages/hugepages-{kb}kB/nr_hugepages) as root")
    return (f"reserve some: write N to /sys/kernel/mm/hugepages/hugepages-{kb}kB/nr_hugepages "
            f"as root (vm.nr_hugepages is the {default_size_kb()} kB pool, not this one)")


def use_backings(others: Sequence[str]) -> str:
    """'use --backing shmem' (several joined by 'or'): the other backings that can run the
    demo on this kernel (demo.Scenario.works_on); '' when none can."""
    return "use " + " or ".join(f"--backing {b}" for b in others) if others else ""


def or_use(fix: str, others: Sequence[str], sep: str = ", or ") -> str:
    """``fix``, then the other backings that work here if there are any:
    'free memory, or use --backing shmem'."""
    return f"{fix}{sep}{use_backings(others)}" if others else fix


def hugepages_short(short: Shortfall, no_reserve: bool, others: Sequence[str]
                    ) -> tuple[str, str]:
    """(cause, fix) when a run cannot get its huge pages and may not grow the pool;
    ``others``: the demo's other backings that work on this kernel (demo.Scenario.works_on)."""
    free = max(0, short.available - short.claimed)
    cause = f"no free huge pages: {short.need} of {short.size_kb} kB needed, "
    if short.claimed and short.available:
        whose = "running uffdctl pid " + ", ".join(str(p) for p in short.claimers)
        cause += (f"{short.available} free, all claimed by {whose}" if not free else
                  f"{free} free ({short.available - free} more claimed by {whose})")
    else:
        cause += f"{free} free"
    cause += " (--no-reserve was given)" if no_reserve else " (not root)"
    more = pool_command(short.size_kb, short.nr + short.need
                        - max(0, short.available - short.claimed))
    fix = "drop --no-reserve, or " if no_reserve else ""
    fix += or_use(f"as root: {more}", others)
    if short.claimed:
        fix += ", or wait until the other run ends"
    return cause, fix


def give_back(size_kb: int, count: int, record: str, root: bool) -> str:
    """The exact commands that give back pages a killed run left, and drop its record (or
    the next uffdctl run would give them back a second time)."""
    return ("" if root else "as root: ") + f"{pool_command(size_kb, count)} && rm {record}"


def leftover(left: Leftover) -> tuple[str, str]:
    """(what happened, fix) for pages a killed uffdctl run left in a pool."""
    whose = (f"{left.pages} {left.size_kb} kB huge pages that uffdctl pid {left.pid} reserved "
             "and never gave back (it was killed)")
    if not left.left:
        return f"gave back {whose}", ""
    fix = give_back(left.size_kb, left.keep, left.record, left.root)
    if left.given_back:
        return (f"gave back {left.given_back} of {whose}; {left.left} are still in the pool "
                f"({left.why})", fix)
    return f"{whose}: {left.left} are still in the pool ({left.why})", fix


def demo_minor_outlook(pools: HugePages, euid: int, works: Sequence[str] | None = None) -> str:
    """What the huge page state means for `uffdctl demo minor`, in one line.  ``works``: the
    backings `demo minor` can use on this kernel (scenarios.backings_that_work("minor",
    offered features)); None when not known, and then no other backing is named."""
    others = [b for b in works or () if b != "hugetlb"]
    instead = " or ".join(f"`demo minor --backing {b}`" for b in others)
    if works is not None and "hugetlb" not in works:
        return ("this kernel cannot do `demo minor` on huge pages (hugetlb)"
                + (f"; run {instead}" if instead else ", nor on shmem"))
    pool = pools.pool()
    if pool is None:
        return "no huge page pool: " + (f"run {instead}" if instead else
                                         "`demo minor` on hugetlb cannot run")
    need = DEMO_MINOR_PAGES
    if pool.available >= need:
        return f"{pool.available} free {pool.size_kb} kB pages: `demo minor` can run as is"
    have = f"{pool.available} free {pool.size_kb} kB pages of {need}" if pool.available \
        else "no free huge pages"
    if euid == 0:
        return (f"{have}: `demo minor` reserves what it needs as root and gives it "
                "back afterwards")
    return (f"{have}: as root, `{pool_command(pool.size_kb, pool.nr + need - pool.available)}`"
            + (f"; or run {instead}" if instead else ""))


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
        fixes.append(use_backings(works))
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
