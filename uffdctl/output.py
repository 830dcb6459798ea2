"""Shared output plumbing for the renderers: terminal detection, NO_COLOR, inert text.

Strings from other processes (command names, paths, cmdlines) are untrusted.  They reach the
terminal only through :func:`inert` (plain output) or as rich ``Text`` objects built from
:func:`inert` strings, never as markup, so they cannot inject escapes or styles.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console


# Line/paragraph separators and bidi overrides reorder or break what the terminal shows.
_INVISIBLE = frozenset(
    "\u2028\u2029\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _escape_char(c: str) -> str:
    o = ord(c)
    if o < 0x20 or 0x7F <= o < 0xA0 or c in _INVISIBLE:
        return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"
    return c


def inert(text: str) -> str:
    """Make an untrusted string safe for a terminal: control characters become \\xNN."""
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
    return _Console(file=stream, no_color=not tty, force_terminal=tty or None,
                    highlight=False, emoji=False, markup=True,
                    width=None if tty else 100)


def dump_json(obj: Any, stream: TextIO | None = None) -> None:
    """One JSON document (or JSON line) on stdout, flushed so pipes see it at once."""
    out = stream or sys.stdout
    out.write(json.dumps(obj) + "\n")
    out.flush()
