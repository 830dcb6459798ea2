"""Shell completion of values (click's ``shell_complete``): --require names, profile names,
and the pids of processes holding a userfaultfd.

Completion runs on every Tab, so this module imports nothing at load time and each callback
only what its own table needs: --require the requirement language (require.py, where the
names come from), -P the profiles, a pid the /proc readers (fdinfo, output).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import click
    from click.shell_completion import CompletionItem


def requirements(ctx: click.Context, param: click.Parameter, incomplete: str
                 ) -> list[CompletionItem]:
    """--require NAME[,NAME...]: the last name of the list, from require.completion_names();
    UFFD_FEATURE_*/UFFDIO_* spellings when that is how it starts, and NAME@user-mode once the
    name is whole.  Matched case-insensitively by prefix, or anywhere in the name when no
    name starts so."""
    from click.shell_completion import CompletionItem

    from . import abi, require

    head, comma, last = incomplete.rpartition(",")
    done = head + comma  # the names already written stay as they are
    base, at, qualifier = last.partition("@")
    capabilities = require.completion_names(capabilities_only=True)
    if at:
        ok = base.strip().lower() in capabilities and \
            require.USER_MODE.startswith(qualifier.strip().lower())
        return [CompletionItem(done + base + "@" + require.USER_MODE)] if ok else []
    low = last.strip().lower()
    if low.startswith("uffd"):
        # The uapi spellings the language accepts too (abi.normalize_feature/normalize_ioctl).
        names = [f.uapi_name for f in abi.FEATURES] + [i.uapi_name for i in abi.IOCTLS]
        return [CompletionItem(done + n) for n in names if n.lower().startswith(low)]
    names = require.completion_names()
    found = [n for n in names if n.startswith(low)] or [n for n in names if low in n]
    if low in capabilities:
        found.append(low + "@" + require.USER_MODE)
    return [CompletionItem(done + n) for n in found]


def profiles(ctx: click.Context, param: click.Parameter, incomplete: str
             ) -> list[CompletionItem]:
    """-P/--require-profile NAME: the consumer profiles (profiles.PROFILES), each with its
    description as help."""
    from click.shell_completion import CompletionItem

    from .profiles import PROFILES

    low = incomplete.lower()
    return [CompletionItem(p.name, help=p.description) for p in PROFILES
            if p.name.startswith(low)]


def uffd_pids(ctx: click.Context, param: click.Parameter, incomplete: str
              ) -> list[CompletionItem]:
    """A PID: the processes holding a userfaultfd (a /proc/PID/fd link reads
    anon_inode:[userfaultfd]), each with its name as help.  Only the links are read, no
    fdinfo or smaps; processes whose descriptors this user may not list are left out.  A
    process names itself (comm): shown inert (output.inert), never as it is."""
    import os

    from click.shell_completion import CompletionItem

    from .fdinfo import is_userfaultfd, list_fds
    from .output import inert

    out = []
    for name in sorted(os.listdir("/proc"), key=lambda n: (len(n), n)):
        if not name.isdigit() or not name.startswith(incomplete):
            continue
        try:
            if not any(is_userfaultfd(link) for _, link in list_fds(int(name))):
                continue
            with open(f"/proc/{name}/comm", errors="surrogateescape") as f:
                comm = f.read().removesuffix("\n")
        except OSError:  # not ours to read, or gone meanwhile
            continue
        out.append(CompletionItem(name, help=inert(comm)))
    return out
