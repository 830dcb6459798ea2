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
# (owned by the probe work: options per issue 2 and issue 5)


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
