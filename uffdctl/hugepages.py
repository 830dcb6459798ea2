"""Huge page pools: what exists, what is free, and reserving pages for a run.

Reservation changes a system-wide setting, so it takes a lock (two uffdctl runs or tests
must not restore each other's value) and always puts back exactly what it added.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from .signals import deferred_sigint

SYSFS_HUGEPAGES = "/sys/kernel/mm/hugepages"
LOCK_PATH = "/run/lock/uffdctl-hugepages.lock"


@dataclass
class Pool:
    """One huge page size: /sys/kernel/mm/hugepages/hugepages-<size>kB."""

    size_kb: int
    nr: int
    free: int
    reserved: int
    surplus: int
    overcommit: int
    default: bool = False

    @property
    def size(self) -> int:
        return self.size_kb * 1024

    @property
    def available(self) -> int:
        """Pages a new mapping can still get without growing the pool."""
        return max(0, self.free - self.reserved)


@dataclass
class HugePages:
    """Every pool, the default size and the hugetlbfs mounts."""

    default_size_kb: int
    pools: list[Pool] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)  # hugetlbfs mount points

    def pool(self, size: int | None = None) -> Pool | None:
        """The pool for a page size in bytes (the default size when None)."""
        want = (size // 1024) if size else self.default_size_kb
        return next((p for p in self.pools if p.size_kb == want), None)


def _read_int(path: str, default: int = 0) -> int:
    try:
        with open(path) as f:
            return int(f.read().strip() or default)
    except (OSError, ValueError):
        return default


def default_size_kb() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Hugepagesize:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def read_pools() -> HugePages:
    default = default_size_kb()
    pools = []
    try:
        names = sorted(os.listdir(SYSFS_HUGEPAGES))
    except OSError:
        names = []
    for name in names:
        if not (name.startswith("hugepages-") and name.endswith("kB")):
            continue
        try:
            kb = int(name[len("hugepages-"):-2])
        except ValueError:
            continue
        d = os.path.join(SYSFS_HUGEPAGES, name)
        pools.append(Pool(kb, _read_int(f"{d}/nr_hugepages"), _read_int(f"{d}/free_hugepages"),
                          _read_int(f"{d}/resv_hugepages"), _read_int(f"{d}/surplus_hugepages"),
                          _read_int(f"{d}/nr_overcommit_hugepages"), kb == default))
    pools.sort(key=lambda p: p.size_kb)
    mounts = []
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "hugetlbfs":
                    mounts.append(parts[1])
    except OSError:
        pass
    return HugePages(default, pools, mounts)


def parse_size(text: str) -> int:
    """'2M', '2MB', '2048k', '1G', '2097152' -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMG" else t
    value = int(num) * mult
    if value <= 0:
        raise ValueError(text)
    return value


class ReserveError(Exception):
    """Huge pages could not be reserved: ``reason`` is the one-line cause."""

    def __init__(self, reason: str, err: int = errno.ENOMEM) -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = err


_lock_depth = 0


@contextmanager
def exclusive() -> Iterator[None]:
    """Hold the machine-wide huge page lock; re-entrant within one process (flock on a second
    open file description would block on ourselves)."""
    global _lock_depth
    if _lock_depth:
        _lock_depth += 1
        try:
            yield
        finally:
            _lock_depth -= 1
        return
    try:
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        fd = -1  # no /run/lock, or not ours to create: nothing to coordinate with
    try:
        if fd >= 0:
            fcntl.flock(fd, fcntl.LOCK_EX)
        _lock_depth = 1
        yield
    finally:
        _lock_depth = 0
        if fd >= 0:
            os.close(fd)


def _pool_file(size_kb: int) -> str:
    return f"{SYSFS_HUGEPAGES}/hugepages-{size_kb}kB/nr_hugepages"


@dataclass
class Reservation:
    """What reserve() did to the pool, so that exactly that is given back."""

    size_kb: int
    added: int  # pages this run added to the pool (0: the pool had enough)
    before: int  # nr_hugepages before


@contextmanager
def reserve(pages: int, size: int | None = None) -> Iterator[Reservation]:
    """Make sure ``pages`` free huge pages of ``size`` bytes exist for the duration.

    Grows the pool by only what is missing and afterwards gives back exactly the pages it added
    (the pool shrinks by that many from whatever size it has then), also on an exception or
    KeyboardInterrupt.  Needs write access to sysfs (root).  The lock is held only while the
    pool is resized, not for the whole run: a second run (or a test fixture holding pages)
    must not wait for this one to finish, and giving back by count keeps concurrent growers'
    pages theirs.
    """
    hp = read_pools()
    pool = hp.pool(size)
    if pool is None:
        raise ReserveError(f"no {size // 1024 if size else hp.default_size_kb} kB huge page "
                           "pool on this kernel", errno.EINVAL)
    path = _pool_file(pool.size_kb)
    added = 0
    try:
        with deferred_sigint(), exclusive():
            pool = read_pools().pool(pool.size)
            assert pool is not None
            missing = pages - pool.available
            before = pool.nr
            if missing > 0:
                target = pool.nr + missing
                # Count what we added before the write completes: a Ctrl-C between the write
                # and the bookkeeping must still give the pages back.
                added = missing
                try:
                    with open(path, "w") as f:
                        f.write(str(target))
                except OSError as exc:
                    added = 0
                    raise ReserveError(f"cannot grow the {pool.size_kb} kB pool ({path}: "
                                       f"{os.strerror(exc.errno or 0)})",
                                       exc.errno or errno.EACCES) from None
                got = _read_int(path)
                added = max(0, got - before)
                if got < target:
                    raise ReserveError(f"the kernel gave {added} of {missing} huge pages "
                                       f"of {pool.size_kb} kB (memory is fragmented or short)")
        yield Reservation(pool.size_kb, added, before)
    finally:
        if added:
            with deferred_sigint(), exclusive():
                current = _read_int(path)
                with open(path, "w") as f:
                    f.write(str(max(0, current - added)))
