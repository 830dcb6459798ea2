"""Ctrl-C that cannot cut a clean-up in half.

Python raises KeyboardInterrupt between any two bytecodes, also inside a ``finally`` block; a
second Ctrl-C (or the first one arriving just as a run ends) would then skip the rest of a
clean-up: huge pages never given back, a region unmapped under a thread still waiting in a
fault.  Inside :func:`deferred_sigint` SIGINT is blocked at the kernel level and delivered when
the block ends, so the interrupt still happens, just after the critical part.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from types import TracebackType


@contextmanager
def deferred_sigint() -> Iterator[None]:
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class GuardedExitStack(ExitStack):
    """An ExitStack whose unwinding (every callback) runs with SIGINT deferred."""

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        with deferred_sigint():
            return bool(super().__exit__(exc_type, exc, tb))


def main_thread_only() -> None:
    """Called first in a worker thread: SIGINT is then always delivered to the main thread,
    so blocking it there (deferred_sigint) really defers it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
