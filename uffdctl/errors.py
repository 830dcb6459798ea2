"""Exit statuses and the one error type every command turns into a one-line message.

The numbers are part of the interface (documented in man/uffdctl.1): CI jobs branch on them.
"""

from __future__ import annotations

OK = 0
FAILED = 1  # a --require is missing, a demo's verification failed, a fault was not resolved
USAGE = 2  # bad command line (click's own status for usage errors)
UNAVAILABLE = 3  # the environment cannot do it: no userfaultfd, no permission, no huge pages
NO_PROCESS = 4  # the pid does not exist, exited, or is not a user process
NO_ACCESS = 5  # not allowed to read that process (ptrace access mode check)
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it


class UffdctlError(Exception):
    """A failure a user can meet: ``cause`` and ``fix`` are one line each."""

    def __init__(self, cause: str, fix: str = "", status: int = UNAVAILABLE) -> None:
        super().__init__(cause)
        self.cause = cause
        self.fix = fix
        self.status = status

    def line(self) -> str:
        return f"uffdctl: {self.cause}" + (f" (fix: {self.fix})" if self.fix else "")


def caused_by_interrupt(exc: BaseException) -> bool:
    """A Ctrl-C can arrive wrapped: Python < 3.12 turns an exception raised while a class
    body is set up (a lazy import, mid-flight) into RuntimeError("Error calling
    __set_name__ ..."), with the KeyboardInterrupt as its cause."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def outcome(exc: BaseException) -> tuple[str, str, int]:
    """(cause, fix, exit status) of a run that ended with ``exc``, as main() reports it: for
    a consumer that must get it as data too (demo --json's final object)."""
    import signal

    from .signals import signal_of

    if isinstance(exc, UffdctlError):
        return exc.cause, exc.fix, exc.status
    if isinstance(exc, KeyboardInterrupt) or caused_by_interrupt(exc):
        signum = signal_of(exc)
        return ("interrupted" if signum == signal.SIGINT else
                f"terminated by {signal.Signals(signum).name}"), "", 128 + signum
    return (f"internal error: {type(exc).__name__}: {exc}",
            "please report it with the command line; UFFDCTL_DEBUG=1 shows the traceback",
            FAILED)
