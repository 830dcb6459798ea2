"""`uffdctl ps` and `uffdctl inspect PID` as Prometheus metrics: the text exposition format
0.0.4, as node_exporter's textfile collector reads it (docs/node-exporter.md).

Every metric is a gauge with HELP and TYPE lines, named so that ``promtool check metrics``
has nothing to say (base units in the name: _bytes, _seconds; no _total on a gauge).  The
names and their meaning are documented in uffdctl-ps(1) and uffdctl-inspect(1), and
docs/prometheus-alerts.yml alerts on them: a name is never changed lightly.

Per process (labels ``pid`` and ``comm``):

uffdctl_userfaultfds                 userfaultfd descriptors it holds
uffdctl_registered_bytes{mode}       bytes registered in each mode in use
uffdctl_pending_faults               fault messages queued and not yet read
uffdctl_stuck_threads                threads asleep in a userfaultfd fault
uffdctl_stuck_seconds                how long the longest-stuck thread has not run (no sample
                                     where the kernel does not say)
uffdctl_unseen_threads               sleeping threads whose wait could not be read
uffdctl_handler_held                 1 when some process holds a descriptor serving it, 0
                                     when none does (only where who serves it was looked
                                     for: handlers.survey)
uffdctl_handler_reading              1 when a thread waits to read that descriptor, 0 when the
                                     handler is gone, stopped or not reading (only while a
                                     fault waits and the verdict is known)

Of the scan: uffdctl_processes_scanned, uffdctl_processes_unreadable{reason},
uffdctl_scan_duration_seconds, uffdctl_last_scan_timestamp_seconds (for inspect only the
last two, labelled ``pid``).

Label values come from other processes (comm is any 15 bytes but NUL): each is made inert
first (output.inert: control characters and bytes that are not UTF-8 become the text
``\\xNN``), so the value is valid UTF-8 on one line, then escaped as the format wants
(backslash, double quote, line feed).  Samples are in pid order; a family with no sample is
left out.  Plain text, no rich.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import handlers
from ..output import inert

if TYPE_CHECKING:
    from ..procs import ProcessReport, PsReport, PsRow

PREFIX = "uffdctl_"

# name -> help: every metric this module can emit, in the order it emits them.
HELP = {
    "userfaultfds": "userfaultfd descriptors the process holds.",
    "registered_bytes": "Bytes of the process's memory registered with a userfaultfd, by "
                        "register mode (a region registered in two modes counts in both).",
    "pending_faults": "Fault messages queued on the process's userfaultfds and not yet read "
                      "(fdinfo pending).",
    "stuck_threads": "Threads of the process asleep in a userfaultfd fault "
                     "(handle_userfault).",
    "stuck_seconds": "How long the longest-stuck thread of the process has not run, in "
                     "seconds (no sample where the kernel does not say).",
    "unseen_threads": "Sleeping threads of the process whose wait could not be read, so "
                      "whether they are stuck in a fault is unknown.",
    "handler_held": "1 when some process holds a userfaultfd serving this process's memory, "
                    "0 when none does.",
    "handler_reading": "1 when a thread waits to read the userfaultfd serving this process's "
                       "waiting faults, 0 when its handler is gone, stopped or not reading "
                       "(no sample while nothing waits or when unknown).",
    "processes_scanned": "Processes the scan looked at.",
    "processes_unreadable": "Processes the scan could not read, by reason.",
    "scan_duration_seconds": "How long the scan took, in seconds.",
    "last_scan_timestamp_seconds": "When the scan ended, in seconds since the Unix epoch.",
}

# handler_reading by verdict (handlers.VERDICTS); unknown and None have no sample.
_READING = {handlers.READING: 1, handlers.GONE: 0, handlers.STOPPED: 0,
            handlers.NOT_READING: 0}


def metric_names() -> list[str]:
    """The full name of every metric the renderer can emit."""
    return [PREFIX + name for name in HELP]


def escape_label(value: str) -> str:
    """An untrusted string as a label value, without the quotes: inert (valid UTF-8, no
    control characters), then backslash, double quote and line feed escaped."""
    text = inert(value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return inert(text).replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass
class _Family:
    name: str
    samples: list[tuple[list[tuple[str, str]], float]] = field(default_factory=list)

    def add(self, labels: list[tuple[str, str]], value: float) -> None:
        self.samples.append((labels, value))

    def lines(self) -> Iterable[str]:
        if not self.samples:
            return
        full = PREFIX + self.name
        yield f"# HELP {full} {_escape_help(HELP[self.name])}"
        yield f"# TYPE {full} gauge"
        for labels, value in self.samples:
            text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels)
            yield f"{full}{{{text}}} {_number(value)}" if text else f"{full} {_number(value)}"


def _families() -> dict[str, _Family]:
    return {name: _Family(name) for name in HELP}


def _process(fams: dict[str, _Family], row: PsRow) -> None:
    who = [("pid", str(row.pid)), ("comm", row.comm)]
    fams["userfaultfds"].add(who, row.uffds)
    for mode, size in row.registered_bytes.items():
        fams["registered_bytes"].add([*who, ("mode", mode)], size)
    fams["pending_faults"].add(who, row.pending)
    fams["stuck_threads"].add(who, row.stuck_threads)
    if row.stuck_for is not None:
        fams["stuck_seconds"].add(who, row.stuck_for)
    fams["unseen_threads"].add(who, row.unseen_threads)
    service = row.service
    if service is not None:
        fams["handler_held"].add(who, 1 if service.files else 0)
        reading = _READING.get(service.verdict or "")
        if reading is not None:
            fams["handler_reading"].add(who, reading)


def _text(fams: dict[str, _Family]) -> str:
    return "".join(line + "\n" for fam in fams.values() for line in fam.lines())


def _timing(fams: dict[str, _Family], labels: list[tuple[str, str]], now: float,
            duration: float) -> None:
    fams["scan_duration_seconds"].add(labels, duration)
    fams["last_scan_timestamp_seconds"].add(labels, now)


def ps_metrics(report: PsReport, now: float, duration: float) -> str:
    """`uffdctl ps --format prometheus`: every process holding a userfaultfd or with a thread
    stuck in a fault, and the scan; ``now`` is when the scan ended (Unix time), ``duration``
    how long it took."""
    fams = _families()
    for row in sorted(report.rows, key=lambda r: r.pid):
        _process(fams, row)
    fams["processes_scanned"].add([], report.scanned)
    for reason, count in sorted(report.unreadable.items()):
        fams["processes_unreadable"].add([("reason", reason)], count)
    _timing(fams, [], now, duration)
    return _text(fams)


def process_metrics(report: ProcessReport, now: float, duration: float) -> str:
    """`uffdctl inspect PID --format prometheus`: the same metrics for one process.  The
    look's duration and time carry its ``pid`` label, so that files for several processes
    can lie side by side in one textfile directory; there is no processes_scanned (one) nor
    processes_unreadable (a process that cannot be read is an error of the command)."""
    from ..procs import ps_row

    fams = _families()
    _process(fams, ps_row(report))
    _timing(fams, [("pid", str(report.pid))], now, duration)
    return _text(fams)
