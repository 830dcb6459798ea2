"""Command line: parse options, run the logic, pick a renderer.  Nothing else lives here.

Imports of logic and renderers are inside the commands so that `uffdctl probe --json` pays
only for what it uses (no rich on the JSON path).
"""

from __future__ import annotations

import sys

import click

from . import __version__, errors

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="uffdctl",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Linux userfaultfd: what this kernel can do, minor faults as they happen,
    and which regions of a live process are registered.

    \b
    Examples:
      uffdctl probe                       what this kernel and process can do
      uffdctl probe --require minor:hugetlb   exit 1 unless minor faults work on hugetlbfs
      sudo uffdctl demo minor             watch minor faults being resolved
      uffdctl inspect 1234                which regions of pid 1234 are registered
      uffdctl ps                          every process holding a userfaultfd
    """


# ----- probe ------------------------------------------------------------------------------

def _split_requirements(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split(",") if v.strip()]


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (schema in uffdctl-probe(1)).")
@click.option("--require", "-r", "require", multiple=True, metavar="NAME[,NAME...]",
              help="Exit 1 unless NAME is available: a feature (minor_hugetlbfs), a matrix cell "
                   "MODE:MEMORY (minor:hugetlb) or an ioctl (continue). Repeatable.")
@click.option("--quiet", "-q", is_flag=True, help="Print only unmet requirements.")
@click.option("--no-ioctl-check", is_flag=True,
              help="Report the ioctls UFFDIO_REGISTER lists without trying each one.")
def probe(as_json: bool, require: tuple[str, ...], quiet: bool, no_ioctl_check: bool) -> int:
    """What this kernel's userfaultfd can do for this process, found out for real.

    \b
    Exit status: 0 every --require met, 1 a requirement missing, 2 usage error,
    3 no userfaultfd can be opened at all.
    \b
    Examples:
      uffdctl probe
      uffdctl probe --json | jq '.matrix[] | select(.ok) | .memory + ":" + .mode'
      uffdctl probe -q --require minor:hugetlb,continue || echo "no minor faults here"
    """
    from . import probe as logic

    try:
        requirements = [logic.parse_requirement(n) for n in _split_requirements(require)]
    except logic.RequirementError as exc:
        raise click.BadParameter(str(exc), param_hint="'--require'") from None
    report = logic.run_probe(check_ioctls=not no_ioctl_check)
    results = logic.check_requirements(report, requirements)
    if as_json:
        from .output import dump_json

        doc = logic.report_to_json(report)
        doc["requirements"] = [{"name": r.requirement.text, "kind": r.requirement.kind,
                                "key": r.requirement.key, "met": r.met, "reason": r.reason}
                               for r in results]
        dump_json(doc)
    elif not quiet:
        from .output import console
        from .render.probe import render

        render(report, console(), results)
    for r in results:
        if not r.met:
            click.echo(f"uffdctl: requirement {r.requirement.text} not met: {r.reason}", err=True)
    if not report.usable:
        return errors.UNAVAILABLE
    return errors.FAILED if any(not r.met for r in results) else errors.OK


# ----- demo -------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def demo() -> None:
    """Narrated, verified demonstrations of userfaultfd's fault modes.

    \b
    Examples:
      sudo uffdctl demo minor
      uffdctl demo minor --backing shmem --pages 64 --json
    """


# (demo minor / missing / wp: owned by the demo work, issues 3 and 6)


# ----- inspect / ps -----------------------------------------------------------------------
# (owned by the inspect work, issue 4)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure ends as one line on stderr and a documented exit status."""
    try:
        status = cli.main(args=argv, prog_name="uffdctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        status = exc.exit_code
    except errors.UffdctlError as exc:
        click.echo(exc.line(), err=True)
        status = exc.status
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("uffdctl: interrupted", err=True)
        status = errors.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`uffdctl ps | head`): not an error worth a traceback.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = errors.OK
    sys.exit(status if isinstance(status, int) else errors.OK)
