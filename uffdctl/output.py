"""Shared output plumbing for the renderers: terminal detection, NO_COLOR, inert text, and
standard streams that cannot crash a command.

Strings from other processes (command names, paths, cmdlines) are untrusted.  They reach the
terminal only through :func:`inert` (plain output) or as rich ``Text`` objects built from
:func:`inert` strings, never as markup, so they cannot inject escapes or styles.  Every byte
is shown inert: C0 controls, DEL and C1 controls (0x80-0x9f, the single-byte CSI 0x9b among
them) as ``\\xNN``, and so is a byte that is not valid UTF-8 (read with surrogateescape,
it arrives as U+DC80-U+DCFF); format characters, line and paragraph separators (bidi
overrides, zero-width joiners) as ``\\uNNNN``.  In JSON such a byte is U+FFFD
(json_text).

Standard output and standard error go through :class:`GuardedStream` (installed by
:func:`guard_streams` before a command parses its options): a closed descriptor, a full disk
or an encoding that cannot show a character neither ends the command nor changes its exit
status; the cause is said once on standard error.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any, TextIO

    from rich.console import Console


# Line/paragraph separators, bidi overrides and other format characters reorder, hide or
# break what the terminal shows: Unicode categories Cc, Cf, Cs, Zl and Zp.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape_char(c: str) -> str:
    o = ord(c)
    if 0xDC80 <= o <= 0xDCFF:  # a byte that is not valid UTF-8 (surrogateescape)
        return f"\\x{o - 0xDC00:02x}"
    if o < 0xA0:
        return f"\\x{o:02x}" if o < 0x20 or o >= 0x7F else c
    import unicodedata

    if unicodedata.category(c) not in _ESCAPED_CATEGORIES:
        return c
    return f"\\u{o:04x}" if o <= 0xFFFF else f"\\U{o:08x}"


def inert(text: str) -> str:
    """Make an untrusted string safe for a terminal: control characters and bytes that are
    not valid UTF-8 become \\xNN, invisible format characters \\uNNNN."""
    if text.isprintable():
        return text
    return "".join(_escape_char(c) for c in text)


def color_wanted(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# A width below MIN_WIDTH is no terminal's (COLUMNS=0 printed nothing at all, COLUMNS=1 a
# column of ellipses): it is taken as unknown, 80 columns as rich assumes then.  One above
# MAX_WIDTH is clamped so that a bogus COLUMNS cannot make every line enormous.
MIN_WIDTH = 20
UNKNOWN_WIDTH = 80
MAX_WIDTH = 1000


def console(stderr: bool = False) -> Console:
    """A rich Console: colour only on a terminal and without NO_COLOR; plain text when piped."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            # rich's own answer is SystemExit(1); the reader going away (`uffdctl ps | head`)
            # is not a failure, and main() ends it quietly, as it does for JSON.
            raise BrokenPipeError

    stream = sys.stderr if stderr else sys.stdout
    tty = color_wanted(stream)
    con = _Console(file=stream, no_color=not tty, force_terminal=tty or None,
                   highlight=False, emoji=False, markup=True,
                   width=None if tty else 100)
    if tty and not MIN_WIDTH <= con.width <= MAX_WIDTH:
        # Only out of range: otherwise rich keeps following the terminal's size.
        con.width = UNKNOWN_WIDTH if con.width < MIN_WIDTH else MAX_WIDTH
    return con


def dump_json(obj: Any, stream: TextIO | None = None) -> None:
    """One JSON document (or JSON line) on stdout, flushed so pipes see it at once; ASCII only,
    a byte that is not valid UTF-8 as U+FFFD (json_text)."""
    dump_pieces((json_text(obj),), stream)


def dump_pieces(pieces: Iterable[str], stream: TextIO | None = None) -> None:
    """A document written as it is made (JSON text in pieces, e.g. documents.report_text),
    ended and flushed as dump_json ends one."""
    out = stream or sys.stdout
    for piece in pieces:
        out.write(piece)
    out.write("\n")
    out.flush()


def json_text(obj: Any, indent: int | None = None, sort_keys: bool = False) -> str:
    """``json.dumps(obj)`` as every document is printed: ASCII only (any locale can carry it)
    and valid Unicode.  Text read from /proc keeps a byte that is not valid UTF-8 as a lone
    surrogate (U+DC80-U+DCFF, Python's surrogateescape), which strict JSON parsers refuse;
    each such byte is U+FFFD (the replacement character) here, its one representation in
    every uffdctl document."""
    import json

    text = json.dumps(obj, indent=indent, sort_keys=sort_keys)
    if "\\ud" not in text:
        return text
    import re

    # An escaped backslash or a surrogate pair (a character beyond U+FFFF) is kept as it is;
    # what is left is an unpaired surrogate.
    return re.sub(r"(\\\\|\\ud[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2})|\\ud[89a-f][0-9a-f]{2}",
                  lambda m: m.group(0) if m.group(1) else "\\ufffd", text)


# ----- standard streams ---------------------------------------------------------------------

class GuardedStream:
    """sys.stdout or sys.stderr as uffdctl writes to them.

    A write that fails (the descriptor was closed: ``>&-``; a full disk; EIO) does not end the
    command: its exit status stays what the work decided, the rest of that stream's output is
    dropped, and the cause is said once on standard error (for standard output).  A character
    the stream's encoding cannot show (a non-UTF-8 locale) is written as a backslash escape.
    The reader going away (EPIPE) is still raised: the command stops, as `| head` wants.

    No ``buffer`` attribute: click would write to it directly, around the guard."""

    def __init__(self, stream: TextIO | None, name: str, fd: int) -> None:
        self._stream = stream
        self._name = name
        self._fd = fd
        self.lost: str | None = "it is closed" if stream is None else None
        self._told = False

    # What rich and click look at.
    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    @property
    def errors(self) -> str:
        return getattr(self._stream, "errors", None) or "strict"

    @property
    def name(self) -> str:
        return f"<{self._name}>"

    @property
    def closed(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def isatty(self) -> bool:
        if self._stream is None or self.lost:
            return False
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False

    def fileno(self) -> int:
        if self._stream is None:
            return self._fd
        return self._stream.fileno()

    def write(self, text: str | bytes) -> int:
        if self.lost or self._stream is None:
            self._tell()
            return len(text)
        size = len(text)
        try:
            if isinstance(text, (bytes, bytearray)):
                # click.echo(bytes), as shell completion does, finds no ``buffer`` here.
                buffer = getattr(self._stream, "buffer", None)
                if buffer is not None:
                    self._stream.flush()
                    buffer.write(text)
                    buffer.flush()
                    return size
                text = bytes(text).decode(self.encoding, "replace")
            try:
                self._stream.write(text)
            except UnicodeEncodeError:
                enc = self.encoding
                self._stream.write(text.encode(enc, "backslashreplace").decode(enc))
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:
            self._lose(exc)
        return size

    def flush(self) -> None:
        if self.lost or self._stream is None:
            return
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except (OSError, ValueError) as exc:
            self._lose(exc)

    def __getattr__(self, attr: str) -> Any:
        if attr == "buffer" or self._stream is None:
            raise AttributeError(attr)
        return getattr(self._stream, attr)

    def _lose(self, exc: BaseException) -> None:
        cause = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        self.lost = cause[0].lower() + cause[1:] if cause else cause
        self._tell()

    def _tell(self) -> None:
        if self._told or self._name != "stdout":
            return
        self._told = True
        err = sys.stderr
        if err is None or err is self:
            return
        try:
            err.write(f"uffdctl: cannot write to standard output: {self.lost} "
                      "(its output is lost; the exit status is the command's own)\n")
            err.flush()
        except (OSError, ValueError):
            pass


def _hold(fd: int, flags: int) -> None:
    """A closed standard descriptor gets /dev/null, so that no file or userfaultfd opened later
    takes its number and receives what is meant for it."""
    try:
        os.fstat(fd)
        return
    except OSError:
        pass
    try:
        new = os.open(os.devnull, flags)
    except OSError:
        return
    if new != fd:
        os.dup2(new, fd)
        os.close(new)
    else:
        os.set_inheritable(fd, True)


def guard_streams() -> None:
    """Put :class:`GuardedStream` in front of sys.stdout and sys.stderr (once; a stream
    Python found closed at start-up is None and becomes one that drops what it is given)."""
    if sys.stdin is None:
        _hold(0, os.O_RDONLY)
    for fd, name in ((1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        if isinstance(stream, GuardedStream):
            continue
        if stream is None:
            _hold(fd, os.O_WRONLY)
        setattr(sys, name, GuardedStream(stream, name, fd))
