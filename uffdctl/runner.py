"""How every run ends: one guarded call, its exit status, an interrupt reported once.

Click-free, so that a command line parsed without click (quick.py) ends exactly as one
parsed with it (cli.py): whichever way a run was parsed, every failure is one line on
stderr and a documented exit status (errors.py), and nothing is left half cleaned up.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

from . import errors

TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)
if TYPE_CHECKING:
    from typing import Any


class ReaderGone(Exception):
    """stdout's reader went away (`uffdctl ps | head`)."""


class _LateInterrupt:
    """sys.unraisablehook: a Ctrl-C (or SIGTERM, SIGHUP, SIGQUIT) that lands in a weakref
    callback or a __del__ (garbage being collected as a command returns) is not raised but
    "ignored" with a traceback.  Remember it instead; finish() reports it like any other
    interrupt."""

    def __init__(self) -> None:
        self.seen = False
        self.signum: int = signal.SIGINT
        self.default = sys.unraisablehook

    def __call__(self, unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            from .signals import signal_of

            self.seen = True
            self.signum = signal_of(unraisable.exc_value)
        else:
            self.default(unraisable)


def say(line: str) -> None:
    """One line on stderr (guarded by output.guard_streams once a command runs)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def finish(call: Callable[[], Any]) -> None:
    """Run the command ``call`` (its return value is the exit status; None is 0) and exit.

    Ctrl-C, SIGTERM, SIGHUP and SIGQUIT unwind the run the same way (everything taken is
    given back) and end it with 128 + the signal number: 130, 143, 129, 131."""
    from . import signals

    late = _LateInterrupt()
    sys.unraisablehook = late
    stopped_by: int | None = None  # the signal that ended the run, reported once, below
    status: Any = errors.OK
    try:
        try:
            signals.install()
            # Held back by __main__.run() while the modules were imported.
            signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.INTERRUPTS)
            status = call()
        except errors.UffdctlError as exc:
            say(exc.line())
            status = exc.status
        except KeyboardInterrupt as exc:
            stopped_by = signals.signal_of(exc)
        except (ReaderGone, BrokenPipeError):
            # The reader went away (`uffdctl ps | head`): not an error worth a traceback.
            import os

            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            status = errors.OK
        except Exception as exc:
            import os

            if errors.caused_by_interrupt(exc):  # click's Abort too: from a KeyboardInterrupt
                stopped_by = signals.signal_of(exc)
            elif os.environ.get("UFFDCTL_DEBUG"):
                raise
            else:
                cause, fix, status = errors.outcome(exc)
                say(errors.UffdctlError(cause, fix).line())
    except KeyboardInterrupt as exc:
        # A signal landing while the outcome above was being reported (the clean-up is done).
        stopped_by = signals.signal_of(exc)
    finally:
        # The work is done and reported: a signal now would only print a traceback from
        # inside the interpreter's shutdown (or cut the report short).
        signal.pthread_sigmask(signal.SIG_BLOCK, signals.INTERRUPTS)
        signals.ignore()
        # CPython remembers a KeyboardInterrupt that escaped any exec() or eval() of a string
        # (dataclasses and namedtuples are made that way, so a Ctrl-C during a lazy import
        # is one) and, even though it was caught and reported here, ends the process with
        # SIGINT instead of our exit status.  Each such exec() clears that memory first.
        exec("")
    if stopped_by is None and late.seen:
        stopped_by = late.signum
    if stopped_by is not None:
        try:  # stderr may be gone (SIGHUP: the terminal closed)
            say("uffdctl: interrupted" if stopped_by == signal.SIGINT else
                f"uffdctl: terminated by {signal.Signals(stopped_by).name}")
        except (OSError, ValueError):
            pass
        status = 128 + stopped_by  # errors.INTERRUPTED for Ctrl-C; 143, 129, 131
    sys.exit(status if isinstance(status, int) else errors.OK)
