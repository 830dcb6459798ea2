"""What a command does once its command line is parsed: run the logic, pick the renderer,
return the exit status.

Click-free: cli.py parses every command line with click and calls these; quick.py runs the
few fixed command lines that fleets and CI run on every machine (`probe --json`) without
importing click, through the same functions, so both give the same output and status.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import errors
from .runner import say

TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)
if TYPE_CHECKING:
    from typing import Any

NFD_EXPIRY = 7200  # probe --nfd-expiry's default, in seconds


def probe(fmt: str = "table", output: str | None = None, nfd_expiry: int = NFD_EXPIRY,
          requirements: Sequence[Any] = (), quiet: bool = False, check_ioctls: bool = True,
          pid: int | None = None, user: str | None = None) -> int:
    """`uffdctl probe`, its options checked (cli.probe; the defaults are those of the options
    left out): requirements are parsed ones (require.parse_requirement)."""
    from . import probe as logic
    from .render import documents

    def run() -> logic.ProbeReport:
        if pid is None and user is None:
            return logic.run_probe(check_ioctls)
        from . import caller

        return caller.probe_as(caller.identity(pid, user), check_ioctls)

    if fmt == "facts":
        # Ansible runs this as an executable fact: any exit but 0 turns the fact into an
        # error, so the answer is a JSON object with every key even when the probe itself
        # cannot run (a --pid that went away); exit 1 only for an unmet --require.
        from .render import formats

        try:
            report = run()
        except errors.UffdctlError as exc:
            formats.deliver("facts", documents.probe_error_json(exc), output)
            for req in requirements:  # nothing to check them against: each is unmet
                say(f"uffdctl: requirement {req.text} not met: {exc.cause}")
            return errors.FAILED if requirements else errors.OK
    else:
        report = run()
    results: list[Any] = []
    if requirements:
        # The requirement language is imported only when something is required: most runs
        # (`probe --json` in CI, the kernel matrix) require nothing.
        from . import require

        results = require.check_requirements(report, list(requirements))
    if fmt == "table":
        if not quiet:
            from .output import console
            from .render.probe import render

            render(report, console(), results)
    else:
        doc = documents.probe_json(report, results)
        if fmt == "json" and output is None:
            from .output import dump_json

            dump_json(doc)  # the common CI path: no need for the formats module
        else:
            from .render import formats

            formats.deliver(fmt, doc, output, nfd_expiry=nfd_expiry)
    for r in results:
        if not r.met:
            say(f"uffdctl: requirement {r.requirement.text} not met: {r.reason}")
    # The flat formats set outputs, labels and facts: a CI step or a node agent running them
    # must not fail where userfaultfd is unavailable (their keys say so, with the reason);
    # only an unmet --require fails them, and only after every key is written.
    if not report.usable and fmt in ("table", "json"):
        return errors.UNAVAILABLE
    return errors.FAILED if any(not r.met for r in results) else errors.OK


def inspect_json(pid: int, all_regions: bool = False) -> int:
    """`uffdctl inspect PID --json` (with --all: every region), on standard output."""
    from . import procs
    from .output import dump_pieces
    from .render.documents import report_text

    dump_pieces(report_text(procs.inspect_process(pid, all_regions)))
    return errors.OK


def ps_json() -> int:
    """`uffdctl ps --json`, on standard output."""
    from . import procs
    from .output import dump_json
    from .render.documents import ps_json as document

    dump_json(document(procs.scan_all()))
    return errors.OK
