"""`python -m uffdctl` and the console script.

A Ctrl-C that lands while the modules are still being imported, before main() is there to
report it, would end in a traceback; a SIGTERM, SIGHUP or SIGQUIT would end the process with
nothing reported.  They are held back at the kernel level until main() has its handlers in
place; then they are delivered and reported like any other interrupt.
"""

# _signal, not signal: the signal module builds its enums on import, a window of its own.
import _signal  # type: ignore[import-not-found]  # no stub: a C module
import os
import sys


def run() -> None:
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT, _signal.SIGTERM,
                                                _signal.SIGHUP, _signal.SIGQUIT})
    # `probe --json` and its like run without click (quick.py), ended as any run is.
    from .quick import command

    call = command(sys.argv[1:])
    try:
        if call is None:
            from .cli import main

            main()
        else:
            from .runner import finish

            finish(call)
    except SystemExit as exc:
        status = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
    else:
        status = 0
    # Everything is cleaned up and reported by now.  Tearing the interpreter down (freeing
    # every module click, rich and uffdctl loaded) would cost ~10 ms, as much as uffdctl's
    # own work in `probe --json`; end the process instead, once the output is out.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the reader went away: nothing left to say to it
    os._exit(status)


if __name__ == "__main__":
    run()
