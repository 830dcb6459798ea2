"""The command lines run without click: `uffdctl probe --json` and its like.

CI gates and fleet agents run `probe --json` on every machine, often many times a day, and
importing click was a fifth of its start-up (benchmarks/README.md, startup.py); monitoring
runs `inspect PID --json` and `ps --json` as often.  A command line made only of the flags
below, in any order, each once, and the command's one positional argument where it takes one
(a pid: decimal digits), needs no parser: it runs through the same function as the click path
(commands.py) and ends the same way (runner.finish).  Anything else (a value, an unknown or
repeated flag, --help, a pid click would read otherwise) goes to click, which parses it and
words any usage error; so a quick line is never refused here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .records import NamedTuple

TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)
if TYPE_CHECKING:
    from typing import Any


class Quick(NamedTuple):
    call: str  # the function of commands.py that runs it
    needs: str  # the flag the line must have
    flags: dict[str, dict[str, Any]]  # flag -> the keywords it gives the call
    positional: str = ""  # the keyword of the one positional argument, a pid; "": none


# The options left out take the call's defaults, which are click's (cli.py).
QUICK: dict[str, Quick] = {
    "probe": Quick("probe", "--json", {"--json": {"fmt": "json"},
                                       "--no-ioctl-check": {"check_ioctls": False}}),
    "inspect": Quick("inspect_json", "--json", {"--json": {}, "--all": {"all_regions": True},
                                                "-a": {"all_regions": True}}, "pid"),
    "ps": Quick("ps_json", "--json", {"--json": {}}),
}


def command(argv: Sequence[str]) -> Callable[[], int] | None:
    """The run of ``argv`` (the arguments after the program name) when it is a quick command
    line, else None (click parses it)."""
    if not argv or argv[0] not in QUICK:
        return None
    quick = QUICK[argv[0]]
    given = list(argv[1:])
    kwargs: dict[str, Any] = {}
    if quick.positional:
        args = [a for a in given if not a.startswith("-")]
        # One pid: plain ASCII digits (click's int() would also take "+1", " 1" or "1_0"),
        # at most 7 of them (PID_MAX_LIMIT is 4194304, include/linux/threads.h): longer ones,
        # 5,000 digits and more included, are click's to word.
        if len(args) != 1 or not (args[0].isascii() and args[0].isdigit()
                                  and len(args[0]) <= 7):
            return None
        kwargs[quick.positional] = int(args[0])
        given.remove(args[0])
    if quick.needs not in given or len(set(given)) != len(given) or \
            any(f not in quick.flags for f in given):
        return None
    for f in given:
        kwargs.update(quick.flags[f])

    def run() -> int:
        from . import commands
        from .output import guard_streams

        guard_streams()  # as cli._Group.make_context does before anything is printed
        return int(getattr(commands, quick.call)(**kwargs))

    return run
