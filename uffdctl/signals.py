"""Ctrl-C, SIGTERM, SIGHUP and SIGQUIT that cannot cut a clean-up in half.

Python raises KeyboardInterrupt between any two bytecodes, also inside a ``finally`` block; a
second Ctrl-C (or the first one arriving just as a run ends) would then skip the rest of a
clean-up: huge pages never given back, a region unmapped under a thread still waiting in a
fault.  Inside :func:`deferred_sigint` these signals are blocked at the kernel level and
delivered when the block ends, so the interrupt still happens, just after the critical part.

SIGTERM (kill, systemd, a container stopping), SIGHUP (the terminal closed, an ssh session
dropped) and SIGQUIT (Ctrl-\\) end a run the way Ctrl-C does: :func:`install` makes each
raise :class:`Terminated`, a KeyboardInterrupt, so every clean-up that runs for Ctrl-C runs
for them; main() then exits with 128 + the signal number.  A signal the parent set to be
ignored (nohup) stays ignored.

A process-directed signal goes to any thread that does not block it; Python runs the
handler in the main thread whichever thread took it.  So a deferred section also holds the
handler back itself (the signal is remembered and raised when the section ends): a signal
taken by a thread that does not block it (a library's) cannot land inside the section.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import FrameType, TracebackType

TERMINATING = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
INTERRUPTS = (signal.SIGINT, *TERMINATING)  # everything deferred_sigint holds back


class Terminated(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGQUIT: unwound like Ctrl-C, reported with the signal's name."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


_depth = 0  # deferred sections the main thread is in
_pending: list[int] = []  # signals the handler held back inside one


def _handler(signum: int, _frame: FrameType | None) -> None:
    if _depth:
        _pending.append(signum)
        return
    raise _exception(signum)


def install() -> None:
    """Ctrl-C, SIGTERM, SIGHUP and SIGQUIT raise (KeyboardInterrupt or Terminated); any of
    them the parent ignores stays ignored.  Main thread only (a rule of signal.signal)."""
    for signum in INTERRUPTS:
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _handler)


def ignore() -> None:
    """Once the run is over and reported: a late signal changes nothing any more."""
    for signum in INTERRUPTS:
        signal.signal(signum, signal.SIG_IGN)


def signal_of(exc: BaseException) -> int:
    """The signal behind an interrupt, found along its cause/context chain: Terminated's, or
    SIGINT (Ctrl-C, or click's Abort)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, Terminated):
            return cur.signum
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return signal.SIGINT


@contextmanager
def deferred_sigint() -> Iterator[None]:
    """Hold back Ctrl-C, SIGTERM, SIGHUP and SIGQUIT until the block ends."""
    global _depth
    main = threading.current_thread() is threading.main_thread()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
    if main:
        _depth += 1
    try:
        yield
    finally:
        if main:
            _depth -= 1
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if main and not _depth and _pending:
            signum = _pending[0]
            _pending.clear()
            raise _exception(signum)


deferred_signals = deferred_sigint


class GuardedExitStack(ExitStack):
    """An ExitStack whose unwinding (every callback) runs with the signals deferred."""

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        with deferred_sigint():
            return bool(super().__exit__(exc_type, exc, tb))


def main_thread_only() -> None:
    """Called first in a worker thread: the signals are then always delivered to the main
    thread, so blocking them there (deferred_sigint) really defers them."""
    signal.pthread_sigmask(signal.SIG_BLOCK, INTERRUPTS)
