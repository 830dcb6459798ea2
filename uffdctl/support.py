"""Why a userfaultfd feature is missing here: the one place that decides it.

Three things are read, in this order of weight: (a) the kernel's own answer, the features
UFFDIO_API offers; (b) its build configuration, where one can be read (kconfig.py); (c) the
architecture it runs on, with the release in which that architecture gained the support
(abi.KCONFIG_GATES).  The release a feature came in (abi.FEATURES) is the first release
anywhere, which is x86_64's: on arm64, write-protect came five years later (6.10, commit
5b32510af77b), so a 6.1 arm64 kernel lacks it because of its architecture, not its release.

A feature the kernel does not offer is always missing; what is missing is then said as data
(:class:`Absence`) for advice.py to word and the renderers to show.  A feature it offers is
taken as there, with one exception the kernel itself documents: from 5.7 to 5.13 UFFDIO_API
offered PAGEFAULT_FLAG_WP on every architecture, and MODE_WP registered on anonymous memory
even where the page tables had no uffd-wp bit, so no write ever faulted; 00b151f21f39
"mm/userfaultfd: fail uffd-wp registration if not supported" (5.14) made the API say so.
Before it, such an offer on an architecture without the support is not believed.

Nothing here prints or reads anything but the configuration file (:func:`here`); the tests
give plain data (a mask, a configuration, a machine and a release).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from . import abi
from .records import NamedTuple

# Why a feature is missing (Absence.why).
RELEASE = "release"  # the kernel predates the feature, on every architecture
ARCHITECTURE = "architecture"  # this architecture has no such support in this release, or ever
CONFIGURATION = "configuration"  # the architecture has it, this kernel's configuration not
BUILD = "build"  # it should be there and is not: the cause is in the kernel's build


class Here(NamedTuple):
    """The running kernel as plain data: what the decision reads besides the offered mask."""

    machine: str  # os.uname().machine: x86_64, aarch64, riscv64, ...
    release: str  # os.uname().release
    config: Mapping[str, str] | None = None  # Kconfig symbol -> "y", "m", "n"; None: unread
    config_source: str | None = None  # the file it was read from

    @property
    def arch(self) -> str:
        return abi.kernel_arch(self.machine)

    def setting(self, symbol: str) -> str | None:
        """The configuration's value of ``symbol`` ("n" when unset); None when unread."""
        return None if self.config is None else self.config.get(symbol, "n")


def here() -> Here:
    """The running kernel: os.uname() and its configuration where it can be read."""
    from . import kconfig

    cfg = kconfig.read()
    return Here(abi.machine(), abi.release(), cfg.values if cfg else None,
                cfg.source if cfg else None)


class Absence(NamedTuple):
    """Why one feature is missing on this kernel, as data.

    ``symbol``: the Kconfig symbol that is really missing (the architecture's HAVE_ARCH one
    for an architecture; "" when none is); ``setting`` its value in the configuration (None:
    unread).  ``needs``: the first release that has the feature on this architecture (None:
    none does, as far as the tables go).  ``offered``: the kernel offered it anyway (the
    5.7-5.13 write-protect bit, see the module)."""

    key: str
    why: str  # RELEASE, ARCHITECTURE, CONFIGURATION or BUILD
    arch: str  # abi.kernel_arch() name
    release: str
    first: str  # the release that added the feature (anywhere)
    needs: str | None
    symbol: str = ""
    setting: str | None = None
    config_source: str | None = None
    support: str = ""  # what the symbol brings: "userfaultfd write-protect"
    arch_first: str | None = None  # when this architecture selected the symbol
    commit: str = ""  # the commit that did
    verified: bool = True  # arch_first read in the kernel source, not only the fact sheet
    known_arch: bool = True  # the tables say something about this architecture
    condition: str = ""  # what the machine needs besides (riscv: a CPU extension)
    offered: bool = False

    @property
    def name(self) -> str:
        return abi.FEATURE_BY_KEY[self.key].name

    @property
    def release_at_least_arch_first(self) -> bool:
        """Is the kernel at least the release in which this architecture gained it?"""
        return self.arch_first is not None and abi.release_at_least(self.release,
                                                                    self.arch_first)


def absence(key: str, offered: int, at: Here) -> Absence | None:
    """Why feature ``key`` is missing on the kernel ``at``, whose UFFDIO_API offered the
    features ``offered``; None when it is there."""
    feat = abi.FEATURE_BY_KEY[key]
    gate = abi.arch_gate(feat.kconfig) if feat.kconfig else None
    where = abi.arch_first(feat.kconfig, at.arch) if feat.kconfig else None
    needs = abi.first_on(key, at.arch)
    base = Absence(key, BUILD, at.arch, at.release, feat.first, needs,
                   config_source=at.config_source, known_arch=where is not None)
    if gate is not None:
        base = base._replace(symbol=gate.symbol, setting=at.setting(gate.symbol),
                             support=gate.support)
    if where is not None:
        base = base._replace(arch_first=where.first, commit=where.commit,
                             verified=where.verified, condition=where.condition)
    arch_lacks = where is not None and (
        where.first is None or not abi.release_at_least(at.release, where.first))
    if offered & feat.mask:
        # Believed, unless the kernel predates the filter that makes the offer say so.
        if (gate is not None and arch_lacks and base.setting != "y"
                and not abi.release_at_least(at.release, gate.filtered_from)):
            return base._replace(why=ARCHITECTURE, offered=True)
        return None
    if where is not None and where.first is None:
        return base._replace(why=ARCHITECTURE)
    if needs is not None and not abi.release_at_least(at.release, needs):
        if arch_lacks and needs != feat.first:
            return base._replace(why=ARCHITECTURE)
        return base._replace(why=RELEASE)
    # New enough for the feature on this architecture: the configuration says which symbol
    # is off, the one everything depends on first (PTE markers cannot be set without the
    # uffd-wp bit).  An architecture the tables do not know: its own symbol unset means it
    # does not select it.
    for link in reversed(abi.gate_chain(feat.kconfig) if feat.kconfig else []):
        if at.setting(link.symbol) == "n":
            gone = base._replace(symbol=link.symbol, setting="n", support=link.support)
            if link.kind == "arch" and where is None:
                return gone._replace(why=ARCHITECTURE)
            return gone._replace(why=CONFIGURATION)
    if base.condition:
        return base._replace(why=ARCHITECTURE)
    return base


def missing(keys: Iterable[str], offered: int, at: Here) -> list[Absence]:
    """Why each of ``keys`` is missing, for those that are (in the order given)."""
    return [a for k in keys if (a := absence(k, offered, at)) is not None]


def lacking(keys: Iterable[str], offered: int, at: Here | None) -> list[str]:
    """The keys of ``keys`` missing here.  ``at`` None: the offer alone decides (a caller
    with nothing known of the kernel but its answer)."""
    if at is None:
        return [k for k in keys if not offered & abi.FEATURE_BY_KEY[k].mask]
    return [a.key for a in missing(keys, offered, at)]


def usable_mask(offered: int, at: Here) -> int:
    """``offered`` without the features that are not really there (an offer this kernel
    predates the filter of: see the module)."""
    for a in missing((f.key for f in abi.FEATURES if offered & f.mask), offered, at):
        offered &= ~abi.FEATURE_BY_KEY[a.key].mask
    return offered
