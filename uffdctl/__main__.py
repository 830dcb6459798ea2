"""`python -m uffdctl` and the console script.

A Ctrl-C can land while the command line module is still being imported, before main()
is there to report it: that is an interrupt too, not a traceback.
"""

import sys


def run() -> None:
    try:
        from .cli import main
    except BaseException as exc:
        from .errors import INTERRUPTED, caused_by_interrupt

        if not caused_by_interrupt(exc):
            raise
        sys.stderr.write("uffdctl: interrupted\n")
        sys.exit(INTERRUPTED)
    main()


if __name__ == "__main__":
    run()
