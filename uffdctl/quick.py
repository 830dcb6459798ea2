"""The command lines run without click: `uffdctl probe --json` and its like.

CI gates and fleet agents run `probe --json` on every machine, often many times a day, and
importing click was a third of its start-up (benchmarks/README.md, startup.py).  A command
line made only of the flags below, in any order, each once, needs no parser: it runs through
the same function as the click path (commands.py) and ends the same way (runner.finish).
Anything else (a value, an unknown or repeated flag, --help) goes to click, which parses it
and words any usage error; so a quick line is never refused here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)
if TYPE_CHECKING:
    from typing import Any

# command -> (the flag it must have, {flag: the keywords it gives commands.COMMAND}); the
# options left out take commands.COMMAND's defaults, which are click's (cli.py).
QUICK: dict[str, tuple[str, dict[str, dict[str, Any]]]] = {
    "probe": ("--json", {"--json": {"fmt": "json"},
                         "--no-ioctl-check": {"check_ioctls": False}}),
}


def command(argv: Sequence[str]) -> Callable[[], int] | None:
    """The run of ``argv`` (the arguments after the program name) when it is a quick command
    line, else None (click parses it)."""
    if not argv or argv[0] not in QUICK:
        return None
    required, flags = QUICK[argv[0]]
    given = argv[1:]
    if required not in given or len(set(given)) != len(given) or \
            any(f not in flags for f in given):
        return None
    kwargs: dict[str, Any] = {}
    for f in given:
        kwargs.update(flags[f])

    def run() -> int:
        from . import commands
        from .output import guard_streams

        guard_streams()  # as cli._Group.make_context does before anything is printed
        return int(getattr(commands, argv[0])(**kwargs))

    return run
