"""Why a registered range's ioctls differ from other memory's: abi.IOCTL_DIFFERENCES applied
to what UFFDIO_REGISTER handed back.

Plain data in, plain data out, nothing imported but abi: the demo calls it right after its
UFFDIO_REGISTER (the other ranges' ioctls read from its own descriptor's fdinfo), the probe
for each memory type of its matrix (the other ranges' ioctls are the other cells').
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from . import abi
from .records import NamedTuple

MISSING, REFUSED = "missing", "refused"
# An ioctl another range has and this one lacks, for which the table has no reason: a kernel
# uffdctl does not know yet.  The tests fail on it, so the table grows with the kernel.
UNEXPLAINED = "unexplained"


class IoctlNote(NamedTuple):
    """One ioctl a range lacks, or has and the kernel refuses there, and why."""

    ioctl: str  # an abi.IOCTLS key
    status: str  # MISSING, REFUSED or UNEXPLAINED
    reason: str  # one line
    errno: str | None  # what a call answers there (seen by the probe, else the table's claim)
    first: str  # the release the reason dates from ("" when unexplained)
    source: str  # where in the kernel ("" when unexplained)
    memory: str = ""  # the memory type (a memtypes name), where notes of several are listed
    mode: str = ""  # the register mode of the range, likewise


def _note(row: abi.IoctlDifference, errno: str | None = None) -> IoctlNote:
    return IoctlNote(row.ioctl, row.status, row.reason, errno or row.errno or None, row.first,
                     row.source)


def _row(ioctl: str, memory: str, status: str) -> abi.IoctlDifference | None:
    return next((r for r in abi.IOCTL_DIFFERENCES
                 if (r.ioctl, r.memory, r.status) == (ioctl, memory, status)), None)


def _missing(ioctl: str, kind: str, modes: set[str], registrable: Collection[str],
             unregistrable: Mapping[str, str]) -> IoctlNote:
    own, rule = _row(ioctl, kind, MISSING), _row(ioctl, "", MISSING)
    # The kind's own reason wins unless it is about a mode the kind can register here: anon
    # never registers MINOR, but shmem registers WP from 5.19, and then a shmem range
    # registered MISSING lacks WRITEPROTECT by the mode's rule, not the kind's.
    if own is not None and (not own.needs_mode or own.needs_mode not in registrable):
        return _also(_note(own), own.needs_mode, unregistrable)
    if rule is not None and rule.needs_mode not in modes:
        return _also(_note(rule), rule.needs_mode, unregistrable)
    return IoctlNote(ioctl, UNEXPLAINED, f"uffdctl knows no reason why UFFDIO_{ioctl.upper()} "
                     "is missing here (a kernel newer than its table?)", None, "", "")


def _also(note: IoctlNote, mode: str, unregistrable: Mapping[str, str]) -> IoctlNote:
    """The note, and why the mode that brings the ioctl does not register here at all, where
    the caller knows (arm64 6.1: no write-protect on arm64, support.absence): the table's
    reason alone would read as if registering that mode were the fix."""
    if mode and mode in unregistrable:
        return note._replace(reason=f"{note.reason}; and {mode.upper()} mode cannot be "
                                    f"registered here: {unregistrable[mode]}")
    return note


def explain(kind: str, mode: str, listed: Collection[str], others: Collection[str],
            registrable: Collection[str], failing: Mapping[str, str] | None = None,
            unregistrable: Mapping[str, str] | None = None) -> list[IoctlNote]:
    """Why the range's ioctls differ: each range ioctl in ``others`` (what other ranges get on
    this kernel) that is not in ``listed`` (what UFFDIO_REGISTER handed back for this range,
    registered in ``mode`` on memory of ``kind``), and each listed one the kernel refuses on
    this kind, in abi.IOCTLS order.

    ``registrable``: the single modes (missing, wp, minor) this kind registers on this kernel.
    ``failing``: the listed ioctls a real call refused (ioctl -> errno), None where none was
    tried; a listed ioctl the table calls refused that a try showed working is not noted (the
    kernel wins).  ``unregistrable``: for a mode this kind cannot register on this kernel for
    want of a feature, why (a cause from support.absence), added to a note about it."""
    modes = set(mode.split("+"))
    notes = []
    for ioctl in (i.key for i in abi.IOCTLS if i.range_ioctl):
        if ioctl in others and ioctl not in listed:
            notes.append(_missing(ioctl, kind, modes, registrable, unregistrable or {}))
        elif (ioctl in listed and (row := _row(ioctl, kind, REFUSED)) is not None
              and (failing is None or ioctl in failing)):
            notes.append(_note(row, failing.get(ioctl) if failing else None))
    return notes


def registrable_modes(kind: str, offered: int) -> set[str]:
    """The single modes ``kind`` registers on a kernel offering ``offered`` features, by what
    each needs (abi.MODE_SUPPORT): what the demo knows without registering the others."""
    return {r.mode for r in abi.MODE_SUPPORT if r.memory == kind
            and all(offered & abi.FEATURE_BY_KEY[f].mask for f in r.features)}


def ioctl_set(mask: int) -> set[str]:
    """The range ioctls of an ioctls mask (UFFDIO_REGISTER's, or fdinfo's build constant,
    which also carries the descriptor's own REGISTER, UNREGISTER and API)."""
    return {i.key for i in abi.IOCTLS if i.range_ioctl and mask & i.mask}


def line(note: IoctlNote) -> str:
    """The note in one line, as the demo narrates it and the probe lists it."""
    name = f"UFFDIO_{note.ioctl.upper()}"
    if note.status == REFUSED:
        return f"{name} is offered but the kernel refuses it here ({note.errno}): {note.reason}"
    return f"no {name} here: {note.reason}"
