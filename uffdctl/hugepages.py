"""Huge page pools: what exists, what is free, and reserving pages for a run.

Reservation changes a system-wide setting, so it takes a lock (two uffdctl runs or tests
must not restore each other's value) and always puts back exactly what it added.  Before it
grows a pool it records what it adds under /run/uffdctl/hugepages, so that the next run gives
back what a killed one (SIGKILL, the OOM killer) left (recover()); the same records are the
accounting between concurrent runs (a run's claim on the pages it will map).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import re
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from . import procfs
from .records import NamedTuple, field, record
from .signals import deferred_sigint

SYSFS_HUGEPAGES = "/sys/kernel/mm/hugepages"
LOCK_PATH = "/run/lock/uffdctl-hugepages.lock"


# Pool and HugePages, read on every `probe`, are named tuples: each dataclass costs three
# exec() calls at import (benchmarks/README.md).  Neither is changed once read.
class Pool(NamedTuple):
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


class HugePages(NamedTuple):
    """Every pool, the default size and the hugetlbfs mounts."""

    default_size_kb: int
    # One shared empty default each: never changed once made.  mounts: hugetlbfs mount points.
    pools: list[Pool] = []  # noqa: RUF012
    mounts: list[str] = []  # noqa: RUF012

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
        with open("/proc/mounts", errors="surrogateescape") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "hugetlbfs":
                    mounts.append(unescape_mount(parts[1]))
    except OSError:
        pass
    return HugePages(default, pools, mounts)


_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape_mount(field: str) -> str:
    """A /proc/mounts field as the path it is: the kernel writes space, tab, newline and
    backslash as \\040, \\011, \\012 and \\134 (seq_escape in fs/proc_namespace.c)."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


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
    """Huge pages could not be reserved: ``reason`` is the one-line cause, ``fix`` (when
    set) what to do about it."""

    def __init__(self, reason: str, err: int = errno.ENOMEM, fix: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.errno = err
        self.fix = fix


class Shortfall(ReserveError):
    """Too few free pages, and this run may not grow the pool (``reserve(grow=False)``)."""

    def __init__(self, size_kb: int, need: int, available: int, claimed: int,
                 claimers: list[int], nr: int, holders: list[tuple[int, int]] | None = None
                 ) -> None:
        self.size_kb = size_kb
        self.need = need
        self.available = available  # free and not reserved by a mapping (Pool.available)
        self.claimed = claimed  # of those, claimed by other live uffdctl runs
        self.claimers = claimers  # their pids
        self.nr = nr  # nr_hugepages of the pool
        # (pid, pages) of live uffdctl runs holding pages of this pool for themselves, claimed
        # or already mapped: who has them once the pages are no longer free
        self.holders = holders or []
        super().__init__(f"{need} of {size_kb} kB needed, "
                         f"{max(0, available - claimed)} free", errno.ENOMEM)


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


# ----- the record of a reservation ----------------------------------------------------------
#
# A run killed by a signal it cannot catch (SIGKILL, the OOM killer) never gives its pages
# back.  So before it grows a pool it writes down what it is adding, and removes the record
# once the pages are given back; the next run finds records whose process is gone and gives
# their pages back (recover()).  The records are also the accounting between concurrent runs:
# a record claims the pages its run will map, and a run counts other live runs' claims as
# taken.  Only root can write here, and only root-owned records are trusted.

RECORD_DIR = "/run/uffdctl/hugepages"
RECORD_VERSION = 1
_seq = itertools.count()


def _process(pid: int) -> tuple[str, int | None] | None:
    """(state, start time in clock ticks since boot) from /proc/PID/stat; None: no such
    process."""
    text = procfs.read_detail(f"/proc/{pid}/stat")
    stat = procfs.parse_stat(text) if text else None
    return (stat.state, stat.start_time) if stat else None


@record
class Record:
    """/run/uffdctl/hugepages/PID-START-N.json: one reservation of a uffdctl run (START: its
    start time, N: its count of reservations)."""

    pid: int
    start_time: int | None  # /proc/PID/stat field 22: a reused pid is another process
    size_kb: int
    added: int  # pages added to the pool (while "growing": about to be)
    claimed: int  # pages the run maps itself (0: pages held for others, a test fixture)
    before: int  # nr_hugepages before growing
    # "growing": the pool is being grown, "held": grown (or not needed), "returning": being
    # shrunk to ``target`` (a run killed then gave back all, some or none of them)
    state: str = "held"
    argv: list[str] = field(default_factory=list)
    path: str = ""
    target: int = 0  # "returning": nr_hugepages once given back
    mapped: int = 0  # of its claim, pages it has mapped (the kernel reserves them for it now)

    def alive(self) -> bool:
        proc = _process(self.pid)
        return (proc is not None and proc[0] not in ("Z", "X")  # a zombie has no memory
                and (self.start_time is None or proc[1] == self.start_time))

    def to_json(self) -> dict[str, object]:
        return {"version": RECORD_VERSION, "pid": self.pid, "start_time": self.start_time,
                "size_kb": self.size_kb, "pool": _pool_file(self.size_kb),
                "added": self.added, "claimed": self.claimed, "nr_before": self.before,
                "nr_target": self.target, "state": self.state, "argv": self.argv,
                "mapped": self.mapped}


def _record_dir() -> None:
    """/run/uffdctl/hugepages, made if missing; refused (OSError) unless each level is a real
    directory of root's that nobody else may write: root writes files there."""
    parts = RECORD_DIR.strip("/").split("/")
    for depth in range(2, len(parts) + 1):  # /run itself is the system's
        d = "/" + "/".join(parts[:depth])
        try:
            os.mkdir(d, 0o755)
        except FileExistsError:
            pass
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise PermissionError(errno.EPERM, f"{d} is not a directory only root may write")


def _write_record(rec: Record) -> None:
    """Atomically: a temporary file, fsync, rename over the record, fsync the directory."""
    _record_dir()
    tmp = rec.path + ".tmp"
    data = (json.dumps(rec.to_json()) + "\n").encode()
    _unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, rec.path)
    dfd = os.open(RECORD_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def read_records() -> list[Record]:
    """Every readable reservation record, live or not."""
    try:
        names = sorted(os.listdir(RECORD_DIR))
    except OSError:
        return []
    out = []
    for name in names:
        if not name.endswith(".json"):
            continue  # a .tmp whose rename never happened: see _drop_stale_tmp
        path = os.path.join(RECORD_DIR, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                if os.fstat(fd).st_uid not in (0, os.geteuid()):
                    continue  # not written by uffdctl as root: never acted on
                raw = os.read(fd, 1 << 16)
            finally:
                os.close(fd)
            d = json.loads(raw)
            start = d.get("start_time")
            out.append(Record(int(d["pid"]), int(start) if start is not None else None,
                              int(d["size_kb"]), int(d["added"]), int(d.get("claimed", 0)),
                              int(d.get("nr_before", 0)), str(d.get("state", "held")),
                              [str(a) for a in d.get("argv", [])], path,
                              int(d.get("nr_target", 0)), int(d.get("mapped", 0))))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return out


def _drop_stale_tmp() -> None:
    """Remove PID-START-N.json.tmp files of processes that are gone (killed between writing
    and renaming; the record it was to replace, if any, is still there and says at least as
    much)."""
    try:
        names = os.listdir(RECORD_DIR)
    except OSError:
        return
    for name in names:
        parts = name.split("-")
        if not (name.endswith(".json.tmp") and len(parts) == 3 and parts[0].isdigit()
                and parts[1].isdigit()):
            continue
        proc = _process(int(parts[0]))
        if proc is None or proc[0] in ("Z", "X") or proc[1] != int(parts[1]):
            try:
                _unlink(os.path.join(RECORD_DIR, name))
            except OSError:
                pass


def claims(size_kb: int) -> list[Record]:
    """The live runs' records that claim pages of the ``size_kb`` pool (read under
    exclusive() to act on them)."""
    return [r for r in read_records() if r.size_kb == size_kb and r.claimed and r.alive()]


def holding(size_kb: int) -> list[tuple[int, int]]:
    """(pid, pages) of the live runs holding pages of the ``size_kb`` pool for themselves,
    claimed or mapped since."""
    return [(r.pid, r.claimed + r.mapped) for r in read_records()
            if r.size_kb == size_kb and r.claimed + r.mapped and r.alive()]


def unclaimed(pool: Pool) -> int:
    """Free pages of ``pool`` that no live uffdctl run has claimed: what another run may
    map."""
    return max(0, pool.available - sum(r.claimed for r in claims(pool.size_kb)))


def _removable(pool: Pool, holders: list[Record]) -> int:
    return max(0, pool.available - sum(max(r.claimed, r.added) for r in holders))


def removable(pool: Pool) -> int:
    """Free pages of ``pool`` that can be removed from it without taking any live uffdctl
    run's pages: not claimed, and not pages a run added that are free again (it gives those
    back by count, so removing them too would leave the pool short, then too big once the
    remover puts back what it removed).  For anything that shrinks the pool (a test fixture
    emptying it), under exclusive()."""
    holders = [r for r in read_records()
               if r.size_kb == pool.size_kb and max(r.claimed, r.added) and r.alive()]
    return _removable(pool, holders)


# A named tuple, as Pool is: made once by recover() on every `probe`, never changed.
class Leftover(NamedTuple):
    """Pages a uffdctl run added to a pool and never gave back (it was killed): what this
    run gave back of them and what is still there."""

    pid: int
    size_kb: int
    pages: int  # what its record says it added
    given_back: int  # given back now
    left: int  # still in the pool (0: all given back, the record removed)
    record: str  # the record's path
    why: str = ""  # why the rest could not be given back now
    keep: int = 0  # the pool's size once the rest is given back (advice.leftover words it)
    root: bool = True  # whether this run could have given it back


def recover() -> list[Leftover]:
    """Give back what uffdctl runs that ended without their clean-up (SIGKILL, the OOM killer)
    added to the pools, as far as those pages are free and no live run claims them; report
    the rest.  Giving back needs root: without it everything found is reported."""
    may_write = os.geteuid() == 0
    if may_write:
        _drop_stale_tmp()
    if all(rec.alive() for rec in read_records()):
        return []  # the common case, without taking the lock
    out = []
    with deferred_sigint(), exclusive():
        live: list[Record] = []
        dead: list[Record] = []
        for rec in read_records():
            (live if rec.alive() else dead).append(rec)
        for rec in dead:
            out.append(_give_back(rec, live, may_write))
    return out


def _give_back(rec: Record, live: list[Record], may_write: bool) -> Leftover:
    recorded = rec.added
    pool = read_pools().pool(rec.size_kb * 1024)
    if pool is None:  # no such pool any more: nothing of it can be left
        if may_write:
            _unlink(rec.path)
        return Leftover(rec.pid, rec.size_kb, recorded, 0, 0, rec.path)
    owed = recorded
    if rec.state == "growing":  # killed while the pool grew: only what it really got
        owed = min(owed, max(0, pool.nr - rec.before))
    elif rec.state == "returning":  # killed while giving back: only what is still there
        owed = min(owed, max(0, pool.nr - rec.target))
    owed = min(owed, pool.nr)
    # Free pages that live runs have claimed (or hold for others) are theirs.
    holders = [r for r in live if r.size_kb == rec.size_kb and max(r.claimed, r.added)]
    give = min(owed, _removable(pool, holders))
    given, nr, why = 0, pool.nr, ""
    path = _pool_file(rec.size_kb)
    if give and may_write:
        try:
            with open(path, "w") as f:
                f.write(str(pool.nr - give))
        except OSError as exc:
            why = f"{path}: {os.strerror(exc.errno or 0)}"
        nr = _read_int(path, pool.nr)
        given = max(0, min(give, pool.nr - nr))
    left = owed - given
    if not may_write:
        why = "not root"
    elif left and not why:
        why = "in use" if not holders else ("in use or held by running uffdctl pid "
                                            + ", ".join(str(r.pid) for r in holders))
    if may_write:
        try:
            if left:
                rec.added, rec.state = left, "held"
                _write_record(rec)
            else:
                _unlink(rec.path)
        except OSError:
            pass
    return Leftover(rec.pid, rec.size_kb, recorded, given, left, rec.path,
                    why if left else "", max(0, nr - left), may_write)


# ----- reserving ----------------------------------------------------------------------------

_claims: dict[int, Record] = {}  # this process's open claim per pool (size_kb)


def mapped(page_size: int, pages: int) -> None:
    """This run has mapped ``pages`` of the pages it claimed: the kernel holds them for it now
    (resv_hugepages), so they come off its claim and other runs do not count them twice."""
    rec = _claims.get(page_size // 1024)
    if rec is None or not rec.claimed:
        return
    # The mapping is in the pool's counts before the claim shrinks: a run reading both in
    # between counts the pages twice (too few free), never not at all.
    moved = min(pages, rec.claimed)
    rec.claimed -= moved
    rec.mapped += moved
    try:
        _write_record(rec)
    except OSError:
        pass  # the larger claim stands: other runs see too few free pages, not too many


def unmapped(page_size: int, pages: int) -> None:
    """This run has unmapped ``pages`` of what it mapped: free again, no longer its own."""
    rec = _claims.get(page_size // 1024)
    if rec is None or not rec.mapped:
        return
    rec.mapped = max(0, rec.mapped - pages)
    try:
        _write_record(rec)
    except OSError:
        pass  # another run names this one as holding pages that are free: it says "wait"


@record
class Reservation:
    """What reserve() did to the pool, so that exactly that is given back."""

    size_kb: int
    added: int  # pages this run added to the pool (0: the pool had enough)
    before: int  # nr_hugepages before
    available: int = 0  # free pages no other uffdctl run claimed, before growing
    record: str | None = None  # the record's path while the block runs


@contextmanager
def reserve(pages: int, size: int | None = None, *, claim: bool = False, grow: bool = True
            ) -> Iterator[Reservation]:
    """Make sure ``pages`` free huge pages of ``size`` bytes exist for the duration.

    Grows the pool by only what is missing and afterwards gives back exactly the pages it added
    (the pool shrinks by that many from whatever size it has then), also on an exception,
    KeyboardInterrupt or signals.Terminated.  Needs write access to sysfs (root).  The lock is
    held only while the pool is resized, not for the whole run: a second run (or a test
    fixture holding pages) must not wait for this one to finish, and giving back by count
    keeps concurrent growers' pages theirs.

    Before the pool grows, a record of it is written under RECORD_DIR (a run killed by
    SIGKILL is cleaned up by the next one: recover()).  ``claim``: the pages are this run's
    own (a demo); other runs count them as taken until the block ends.  Without it (a test
    fixture holding pages for a child process) they are free for whoever comes.  ``grow``
    False: never grow the pool, raise Shortfall when short.
    """
    hp = read_pools()
    pool = hp.pool(size)
    if pool is None:
        raise ReserveError(f"no {size // 1024 if size else hp.default_size_kb} kB huge page "
                           "pool on this kernel", errno.EINVAL)
    path = _pool_file(pool.size_kb)
    added = 0
    record: Record | None = None
    try:
        with deferred_sigint(), exclusive():
            pool = read_pools().pool(pool.size)
            assert pool is not None
            others = claims(pool.size_kb)
            claimed = sum(r.claimed for r in others)
            available = max(0, pool.available - claimed)
            missing = pages - available
            before = pool.nr
            if missing > 0 and not grow:
                raise Shortfall(pool.size_kb, pages, pool.available, claimed,
                                [r.pid for r in others], pool.nr, holding(pool.size_kb))
            if claim or missing > 0:
                pid = os.getpid()
                proc = _process(pid)
                start = proc[1] if proc else None
                # The start time in the name too: a reused pid never overwrites the record a
                # killed process left.
                record = Record(pid, start, pool.size_kb, max(0, missing),
                                pages if claim else 0, before,
                                "growing" if missing > 0 else "held", list(sys.argv),
                                f"{RECORD_DIR}/{pid}-{start or 0}-{next(_seq)}.json")
                try:
                    _write_record(record)
                    if claim:
                        _claims[pool.size_kb] = record
                except OSError as exc:
                    record = None
                    if missing > 0:
                        raise ReserveError(
                            f"cannot record the reservation in {RECORD_DIR} "
                            f"({os.strerror(exc.errno or 0)})", exc.errno or errno.EACCES,
                            f"make {RECORD_DIR} writable for root, or reserve the pages "
                            "yourself and run with --no-reserve") from None
                    # Not root: the claim cannot be announced; the pages were counted.
            if missing > 0:
                assert record is not None
                target = pool.nr + missing
                # Count what we added before the write completes: an interrupt between the
                # write and the bookkeeping must still give the pages back.
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
                record.added, record.state = added, "held"
                try:
                    _write_record(record)
                except OSError:
                    pass  # the "growing" record still says at most this much
        yield Reservation(pool.size_kb, added, before, available,
                          record.path if record else None)
    finally:
        if record is not None and _claims.get(record.size_kb) is record:
            del _claims[record.size_kb]
        if added or record is not None:
            with deferred_sigint(), exclusive():
                if added:
                    current = _read_int(path)
                    target = max(0, current - added)
                    if record is not None:
                        # Killed between here and the unlink, the next run must not give
                        # these pages back a second time: it gives back only what is above
                        # the target.
                        record.state, record.target = "returning", target
                        try:
                            _write_record(record)
                        except OSError:
                            pass
                    with open(path, "w") as f:
                        f.write(str(target))
                if record is not None:
                    _unlink(record.path)  # only once the pages are back
