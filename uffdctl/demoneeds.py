"""What each demo needs of the kernel, as data: one row per demo.

scenarios.py adds what each demo does (how it fills, touches and resolves) and demo.py runs
it; what the kernel must offer for it is here, apart from the engine, because `probe` asks it
too (probe.capacity: could each demo run on hugetlb now) and must not import the engine to
ask: the engine and its dataclasses were a sixth of `probe --json`'s start-up (issue 17).
"""

from __future__ import annotations

from . import abi, memtypes, support
from .records import NamedTuple

DEFAULT_PAGES = 8  # a demo's --pages when not given (demo.DemoConfig.pages)


class DemoNeeds(NamedTuple):
    name: str
    register_mode: str  # the features it needs follow from abi.MODE_SUPPORT per memory kind
    backings: tuple[str, ...]
    # Asked for where offered, needed by none of the checks (fault messages name the thread).
    extra_features: tuple[str, ...] = ("thread_id",)
    # (DemoConfig attribute, features it needs when true): e.g. --async needs WP_ASYNC.
    option_features: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def needs(self, memory: str, cfg: object | None = None) -> tuple[str, ...]:
        """The features the kernel must offer for this run (abi.MODE_SUPPORT + options);
        ``cfg`` (a demo.DemoConfig) None: the demo without options."""
        out = list(abi.features_for(self.register_mode, memory))
        for option, keys in self.option_features:
            if cfg is not None and getattr(cfg, option):
                out += [k for k in keys if k not in out]
        return tuple(out)

    def absent(self, memory: str, cfg: object | None, offered: int, at: support.Here
               ) -> list[support.Absence]:
        """Why each feature this run needs on ``memory`` is missing on the kernel ``at``
        (``offered``: its UFFDIO_API features mask), for those that are."""
        return support.missing(self.needs(memory, cfg), offered, at)

    def lacking(self, memory: str, cfg: object | None, offered: int,
                at: support.Here | None = None) -> list[str]:
        """The features this run needs on ``memory`` that are missing: not offered (or, on
        the kernel ``at``, offered but not there: support.absence)."""
        return support.lacking(self.needs(memory, cfg), offered, at)

    def works_on(self, cfg: object | None, offered: int, at: support.Here | None = None
                 ) -> list[str]:
        """The backings of this demo whose needs the kernel offers: the one place every fix
        that suggests another backing learns which ones to name."""
        return [name for name in self.backings
                if not self.lacking(memtypes.MEMORY_BY_NAME[name].kind, cfg, offered, at)]


DEMOS: dict[str, DemoNeeds] = {
    "minor": DemoNeeds("minor", "minor", ("hugetlb", "shmem")),
    "missing": DemoNeeds("missing", "missing", ("anon", "shmem", "hugetlb")),
    "wp": DemoNeeds("wp", "wp", ("anon", "shmem", "hugetlb"),
                    option_features=(("wp_async", ("wp_async",)),)),
}


def backings_that_work(mode: str, offered: int, at: support.Here | None = None) -> list[str]:
    """The backings `demo MODE` without options can use on a kernel that offers the
    ``offered`` features (the UFFDIO_API mask; ``at``: that kernel, see support.absence):
    what the probe tells about the demos."""
    return DEMOS[mode].works_on(None, offered, at)
