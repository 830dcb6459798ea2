"""A process's userfaultfd descriptors: /proc/PID/fd links and their fdinfo.

fdinfo of a userfaultfd (6.18 fs/userfaultfd.c userfaultfd_show_fdinfo()):

    pending:	1          fault messages not yet read
    total:	1          threads still blocked: pending + read but not yet woken
    API:	aa:80000300:80000000000001ff

Above them, the generic lines every fdinfo has (pos, flags, mnt_id and, from 5.12, ino: the
descriptor's own inode, since userfaultfd became a secure anonymous inode, so it names one
userfaultfd across processes; 5.10 prints no ino line and all userfaultfds share one inode).

``total`` is not a running count of faults: it drops back to 0 when the faults are resolved.
The API line's middle field is this descriptor's feature word (what UFFDIO_API asked for, plus
bit 31 once the handshake is done); the last field is a constant of the kernel build.  The
kernel's authors call the whole thing informational: parse it leniently.
"""

from __future__ import annotations

import errno
import os

from . import abi
from .records import record


@record
class FdInfo:
    pending: int | None = None
    total: int | None = None
    api_version: int | None = None
    features_mask: int | None = None  # None: no API line (not a userfaultfd, or odd content)
    api_ioctls: int | None = None
    flags: int | None = None  # open flags (octal in the file)
    ino: int | None = None  # None where the kernel prints no ino line (before 5.12)

    @property
    def initialized(self) -> bool:
        """UFFDIO_API has been done on this descriptor (5.15+ marks it with bit 31)."""
        return bool(self.features_mask and self.features_mask & abi.UFFD_FEATURE_INITIALIZED)

    @property
    def features(self) -> list[str]:
        """The features asked for, by name; bit 31 ("initialized") is not a feature."""
        mask = (self.features_mask or 0) & ~abi.UFFD_FEATURE_INITIALIZED
        return abi.feature_names(mask)


def _int(text: str, base: int = 10) -> int | None:
    try:
        return int(text.strip(), base)
    except ValueError:
        return None


def parse_fdinfo(text: str) -> FdInfo:
    info = FdInfo()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = value.strip()
        if key == "pending":
            info.pending = _int(value)
        elif key == "total":
            info.total = _int(value)
        elif key == "flags":
            info.flags = _int(value, 8)
        elif key == "ino":
            info.ino = _int(value)
        elif key == "API":
            parts = value.split(":")
            if len(parts) == 3:
                info.api_version = _int(parts[0], 16)
                info.features_mask = _int(parts[1], 16)
                info.api_ioctls = _int(parts[2], 16)
    return info


@record
class UffdDescriptor:
    fd: int
    info: FdInfo

    @property
    def pending(self) -> int:
        return self.info.pending or 0

    @property
    def total(self) -> int:
        return self.info.total or 0

    @property
    def features(self) -> list[str]:
        return self.info.features

    @property
    def features_mask(self) -> int:
        return self.info.features_mask or 0


def is_userfaultfd(link: str) -> bool:
    return link == abi.FDINFO_READLINK


def list_fds(pid: int) -> list[tuple[int, str]]:
    """(fd, link target) of every open descriptor.  Raises OSError as /proc does when the
    process cannot be read (procfs.error() says why); a descriptor closed meanwhile is left
    out."""
    base = f"/proc/{pid}/fd"
    out = []
    for name in os.listdir(base):
        try:
            out.append((int(name), os.readlink(f"{base}/{name}")))
        except OSError as exc:
            # ENOENT: closed since the listing.  ENAMETOOLONG: a path longer than the page
            # fs/proc/base.c do_proc_readlink() writes it into, so not an anon_inode.
            if exc.errno not in (errno.ENOENT, errno.ENAMETOOLONG):
                raise
    return sorted(out)


def userfaultfds(pid: int, links: list[tuple[int, str]] | None = None
                 ) -> list[UffdDescriptor]:
    """The process's userfaultfd descriptors with their fdinfo, in fd order; ``links``: its
    descriptors as list_fds() just gave them (not listed again)."""
    found = []
    for fd, link in list_fds(pid) if links is None else links:
        if not is_userfaultfd(link):
            continue
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = parse_fdinfo(f.read())
        except FileNotFoundError:
            continue  # closed since the listing; ESRCH (the process went) is the caller's
        found.append(UffdDescriptor(fd, info))
    return found
