"""`python -m uffdctl` and the console script.

A Ctrl-C that lands while the modules are still being imported, before main() is there to
report it, would end in a traceback.  SIGINT is held back at the kernel level until main()
is inside its handlers; then it is delivered and reported like any other interrupt.
"""

# _signal, not signal: the signal module builds its enums on import, a window of its own.
import _signal  # type: ignore[import-not-found]  # no stub: a C module


def run() -> None:
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGINT})
    from .cli import main

    main()


if __name__ == "__main__":
    run()
