"""Demo output: JSON lines, plain lines when piped, a narrated view on a terminal.

The JSON and plain renderers import nothing heavy, so they add little to the handler's
round trip; the terminal view uses rich and shows a progress bar instead of every fault when
there are many pages.
"""

from __future__ import annotations

import sys
from typing import TextIO

from ..demo import Fault, Step, Summary, log2_histogram, percentiles
from .documents import demo_failed_json, event_json, summary_json

STREAM_LIMIT = 64  # beyond this many pages the terminal shows progress, not every fault


def _us(ns: int | None) -> str:
    return "-" if ns is None else f"{ns / 1000:.1f} us"


def fault_line(e: Fault) -> str:
    what = "+".join(e.flag_names) or "MISSING"
    dup = " (another thread, same page: woken)" if e.duplicate else ""
    mod = ", contents changed first" if e.modified else ""
    return (f"fault #{e.seq} page {e.page} @0x{e.address:x} {what} tid {e.tid} -> "
            f"UFFDIO_{e.resolved_with.upper()}{mod}{dup} "
            f"[handler: {_us(e.handle_ns)} from message read to ioctl return]")


def _plain(value: object) -> str:
    if isinstance(value, dict):
        return "; ".join(f"by {k.replace('_', ' ')}: {_plain(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return str(value)


def summary_lines(s: Summary) -> list[str]:
    lat, floor = percentiles(s.latency_ns), percentiles(s.floor_ns)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.kinds.items())) or "none"
    lines = [
        f"result: {'OK' if s.ok else 'FAILED'}" + (f" ({s.error})" if s.error else ""),
        f"faults caught: {s.faults} of {s.expected_faults} expected in {s.pages} pages ({kinds}); "
        f"{s.messages} messages read"
        + (f"; {s.writes} writes" if s.writes else ""),
        f"bytes verified: {s.verified_bytes} of {s.pages * s.page_size}"
        + (f"; pages that differ: {s.mismatched_pages}" if s.mismatched_pages else ""),
    ]
    if lat:
        lines.append(f"round trip per fault (toucher: touch call to its return, with fault, "
                     f"handler and wake-up): p50 {_us(lat['p50'])}, p90 {_us(lat['p90'])}, "
                     f"p99 {_us(lat['p99'])}, max {_us(lat['max'])} ({lat['n']} samples)")
    if s.aborted_touches:
        lines.append(f"aborted touches: {s.aborted_touches} (woken by the abort, never "
                     "resolved: in no round-trip figure)")
    if floor:
        ratio = f" = {lat['p50'] / floor['p50']:.0f}x the floor" if lat and floor['p50'] else ""
        lines.append(f"kernel's own fault, no userfaultfd (floor, the same touch timed the "
                     f"same way): p50 {_us(floor['p50'])}" + ratio)
    lines.append(f"placement: {s.cpu_note}; uffd via {s.uffd_method}; {s.threads} thread(s)")
    for key, value in s.extra.items():
        if key == "pagetables" and isinstance(value, list):
            lines += [_pagetables_line(r, s.mode) for r in value if isinstance(r, dict)]
            continue
        lines.append(f"{key.replace('_', ' ')}: {_plain(value)}")
    return lines


def _pagetables_line(r: dict[str, object], mode: str) -> str:
    """One pagemap reading of the summary (pagetables.Reading.fields()): what the demo of
    ``mode`` claims of it."""
    line = (f"pagemap {r['phase']}, {r['mapping']} mapping: {r['present']} of {r['pages']} "
            "present")
    if mode == "wp":
        line += (f", uffd-wp on {r['uffd_wp']}" if r.get("uffd_wp") is not None else
                 ", uffd-wp bit unknown (pagemap has none before Linux 5.14)")
    if r.get("same_frame") is not None:
        line += f", same page frames as the plain mapping: {r['same_frame']}"
    elif mode == "minor" and r["mapping"] == "registered" and r["phase"] == "after" \
            and not r.get("pfn_visible"):
        line += ", page frames hidden (needs CAP_SYS_ADMIN)"
    unexpected = r.get("unexpected")
    if unexpected:
        line += f"; not as the demo says: pages {_plain(unexpected)}"
    return line


def histogram_lines(s: Summary, width: int = 40) -> list[str]:
    hist = log2_histogram(s.latency_ns)
    if not hist:
        return []
    top = max(c for _, c in hist) or 1
    out = ["round trip histogram (us, log2 buckets):"]
    for bound, count in hist:
        bar = "#" * max(1 if count else 0, round(width * count / top))
        out.append(f"  <= {bound:>7} | {bar} {count}")
    return out


class JsonRenderer:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, e: Step | Fault) -> None:
        import json

        self.out.write(json.dumps(event_json(e)) + "\n")
        self.out.flush()

    def finish(self, s: Summary) -> None:
        import json

        self.out.write(json.dumps(summary_json(s)) + "\n")
        self.out.flush()

    def failed(self, mode: str, backing: str, cause: str, fix: str, status: int) -> None:
        """The run ended without a summary: still one final object (the cause is also the
        one line on stderr)."""
        import json

        self.out.write(json.dumps(demo_failed_json(mode, backing, cause, fix, status)) + "\n")
        self.out.flush()


class PlainRenderer:
    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout

    def __call__(self, e: Step | Fault) -> None:
        self.out.write(("step: " + e.text if isinstance(e, Step) else fault_line(e)) + "\n")
        self.out.flush()

    def finish(self, s: Summary) -> None:
        self.out.write("\n".join(summary_lines(s) + histogram_lines(s)) + "\n")
        self.out.flush()


class LiveRenderer:
    """The narrated terminal view: numbered steps, faults streaming (or a progress bar when
    there are many pages), then the summary and the histogram."""

    def __init__(self, pages: int, story: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from ..output import console

        self.con = console()
        self.steps = 0
        self.pages = pages
        self.progress: Progress | None = None
        if pages > STREAM_LIMIT:
            self.progress = Progress(TextColumn("faults resolved"), BarColumn(),
                                     MofNCompleteColumn(), console=self.con, transient=True)
            self.task = self.progress.add_task("faults", total=pages)
        if story:
            self.con.print(f"[bold]{story}[/bold]")

    def __call__(self, e: Step | Fault) -> None:
        from rich.text import Text

        if isinstance(e, Step):
            self.steps += 1
            self.con.print(Text(f"{self.steps:>2}. ", style="cyan") + Text(e.text))
            return
        if self.progress is not None:
            if not self.progress.live.is_started:
                self.progress.start()
            if not e.duplicate:
                self.progress.update(self.task, completed=e.seq)
            return
        style = "yellow" if e.duplicate else ("magenta" if e.modified else "green")
        self.con.print(Text("    ") + Text(fault_line(e), style=style))

    def finish(self, s: Summary) -> None:
        from rich.text import Text

        if self.progress is not None and self.progress.live.is_started:
            self.progress.stop()
        self.con.print()
        for i, line in enumerate(summary_lines(s)):
            style = ("bold green" if s.ok else "bold red") if i == 0 else ""
            self.con.print(Text(line, style=style))
        for line in histogram_lines(s):
            self.con.print(Text(line, style="dim" if line.startswith("round") else ""))

    def close(self) -> None:
        if self.progress is not None and self.progress.live.is_started:
            self.progress.stop()
