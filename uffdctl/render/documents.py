"""Every JSON document uffdctl prints, built from the logic's plain data in one place.

No rich, nothing heavy: `probe --json` and `demo --json` import only this.  The schemas are
documented in the man pages (uffdctl-probe(1), uffdctl-demo(1), uffdctl-inspect(1),
uffdctl-ps(1)); a key is never removed or renamed without bumping its schema_version.
"""

from __future__ import annotations

from collections.abc import Iterator

from .. import abi
from ..output import json_text

TYPE_CHECKING = False  # as typing's, without importing typing at run time (records.py)
if TYPE_CHECKING:
    from typing import Any

    from .. import errors
    from ..demo import Fault, Step, Summary
    from ..probe import ProbeReport
    from ..require import RequirementResult

# 2: api.kernel_faults, requirements[].needs_kernel_faults; a requirement is met only with
# kernel-mode faults unless it says @user-mode.
# 3: capability apart from capacity.  A matrix cell no longer depends on free huge pages (it
# is registered on MAP_NORESERVE memory), so status "no-hugepages" is gone: a kernel without
# hugetlb of the size is "unsupported" (errno ENODEV, ENOENT or ENOSYS from memfd_create);
# tries that needed a free huge page are in untested_ioctls.  New: capacity {hugepages,
# demos}, what the pools hold now and whether each demo could run on hugetlb now.
PROBE_SCHEMA_VERSION = 3


def size_name(size_kb: int) -> str:
    """A huge page size as a key part: 2048 -> "2m", 1048576 -> "1g", 64 -> "64k"."""
    if size_kb % (1 << 20) == 0:
        return f"{size_kb >> 20}g"
    if size_kb % 1024 == 0:
        return f"{size_kb >> 10}m"
    return f"{size_kb}k"


# ----- the JSON text ------------------------------------------------------------------------------

# ----- probe ------------------------------------------------------------------------------------

def probe_json(report: ProbeReport, results: list[RequirementResult] | None = None
               ) -> dict[str, Any]:
    """The `uffdctl probe --json` document (schema_version 3):

    kernel: {release, machine, config: {CONFIG_...: "y"|"n"|"m"} | null, config_source,
             config_not_in_release: {CONFIG_...: release that added it}}
    access: {usable, uid, euid, cap_sys_ptrace, initial_userns, unprivileged_userfaultfd,
             seccomp, seccomp_filters, gids, dev_userfaultfd: {exists, mode, uid, gid,
             accessible, kind, rdev, nodev, acl}, userfaultfd_dev,
             verdict: {kernel_faults, method, text, cause, fix},
             methods: [{name, ok, errno, cause, fix, kernel_faults, denied_by: [by]}]}
    api: {method, kernel_faults, features_mask, ioctls_mask, ioctls: [names],
          features: [{name, bit, first, offered, usable, errno, meaning, first_here, why_not,
                      fix}]} | null
    matrix: [{memory, mode, ok, status, errno, error, fix, ioctls_mask, ioctls: [names],
              failing_ioctls: [names], failing: {name: errno}, untested_ioctls: {name: why}}]
    hugepages: {default_size_kb, mounts, pools: [{size_kb, nr, free, reserved, surplus,
                overcommit, default}], leftover: [{pid, size_kb, pages, given_back, left,
                record, why, fix}]}
    capacity: {hugepages: [{size_kb, size, default, total, free}],
               demos: [{demo, backing, size_kb, needs, free, can_run, why}]}
    ioctl_notes: [{memory, mode, ioctl, status, reason, errno, first, source}] (why each memory
                 type's widest cell lacks an ioctl others get, or is refused one it lists)
    requirements: [{name, kind, key, needs_kernel_faults, met, reason}]
    caller: {name, pid, uid, gid, groups, cap_eff, no_new_privs, seccomp, seccomp_filters,
             initial_userns, copied: [what], inferred: [what]} | null (probe --pid/--user)
    """
    # advice here: inspect's and ps's documents need none of it (start-up, issue 17).
    from .. import advice
    from ..probe import capacity, ioctl_notes

    ctx = report.access.context
    verdict = report.access.verdict
    api = report.api
    now = capacity(report)
    requirements = [{"name": r.requirement.text, "kind": r.requirement.kind,
                     "key": r.requirement.key,
                     "needs_kernel_faults": r.requirement.needs_kernel_faults,
                     "met": r.met, "reason": r.reason}
                    for r in results or []]
    return {
        "schema_version": PROBE_SCHEMA_VERSION,
        "kernel": {"release": report.kernel.release, "machine": report.kernel.machine,
                   "config": report.kernel.config, "config_source": report.kernel.config_source,
                   "config_not_in_release": report.kernel.not_in_release},
        "access": {
            "usable": report.access.usable, "uid": ctx.uid, "euid": ctx.euid,
            "cap_sys_ptrace": ctx.cap_sys_ptrace, "initial_userns": ctx.initial_userns,
            "unprivileged_userfaultfd": ctx.sysctl, "seccomp": ctx.seccomp,
            "seccomp_filters": ctx.seccomp_filters,
            "gids": list(ctx.gids),
            "dev_userfaultfd": {"exists": ctx.dev.exists, "mode": ctx.dev.mode,
                                "uid": ctx.dev.uid, "gid": ctx.dev.gid,
                                "accessible": ctx.dev.accessible, "kind": ctx.dev.kind or None,
                                "rdev": ctx.dev.rdev or None, "nodev": ctx.dev.nodev,
                                "acl": bool(ctx.dev.acl)},
            "userfaultfd_dev": ctx.misc_dev,
            "verdict": {"kernel_faults": verdict.kernel_faults, "method": verdict.method,
                        "text": verdict.text, "cause": verdict.cause or None,
                        "fix": verdict.fix or None},
            "methods": [{"name": m.name, "ok": m.ok, "errno": m.errno, "cause": m.cause or None,
                         "fix": m.fix or None, "kernel_faults": m.kernel_faults,
                         "denied_by": [d.by for d in m.denials]}
                        for m in report.access.methods],
        },
        "api": None if api is None else {
            "method": api.method, "kernel_faults": api.kernel_faults,
            "features_mask": api.features_mask,
            "ioctls_mask": api.ioctls_mask, "ioctls": abi.ioctl_names(api.ioctls_mask),
            # first_here, why_not and fix: keys added in schema 3 (no bump: keys are only
            # ever added within a version).
            "features": [{"name": f.name, "bit": f.bit, "first": f.first, "offered": f.offered,
                          "usable": f.usable, "errno": f.errno, "meaning": f.meaning,
                          "first_here": f.first_here, "why_not": f.why_not, "fix": f.fix}
                         for f in api.features],
        },
        "matrix": [{"memory": c.memory, "mode": c.mode, "ok": c.ok, "status": c.status,
                    "errno": c.errno, "error": c.error, "fix": c.fix,
                    "ioctls_mask": c.ioctls_mask, "ioctls": c.ioctls,
                    "failing_ioctls": sorted(c.failing_ioctls), "failing": c.failing_ioctls,
                    "untested_ioctls": c.untested_ioctls}
                   for c in report.matrix],
        "hugepages": {
            "default_size_kb": report.hugepages.default_size_kb,
            "mounts": report.hugepages.mounts,
            "pools": [{"size_kb": p.size_kb, "nr": p.nr, "free": p.free, "reserved": p.reserved,
                       "surplus": p.surplus, "overcommit": p.overcommit, "default": p.default}
                      for p in report.hugepages.pools],
            "leftover": [{"pid": x.pid, "size_kb": x.size_kb, "pages": x.pages,
                          "given_back": x.given_back, "left": x.left, "record": x.record,
                          "why": x.why or None, "fix": advice.leftover(x)[1] or None}
                         for x in report.leftover],
        },
        # Volatile: what the pools hold now.  Never part of a capability (formats keeps the
        # two apart: capacity_* keys, and no NFD label).
        "capacity": {
            "hugepages": [{"size_kb": p.size_kb, "size": size_name(p.size_kb),
                           "default": p.default, "total": p.total, "free": p.free}
                          for p in now.pools],
            "demos": [{"demo": d.demo, "backing": d.backing, "size_kb": d.size_kb,
                       "needs": d.needs, "free": d.free, "can_run": d.can_run,
                       "why": d.why or None} for d in now.demos],
        },
        # A key added in schema 3: no bump (keys are only ever added within a version).
        "ioctl_notes": [{"memory": n.memory, "mode": n.mode, "ioctl": n.ioctl,
                         "status": n.status, "reason": n.reason, "errno": n.errno,
                         "first": n.first or None, "source": n.source or None}
                        for n in ioctl_notes(report)],
        "requirements": requirements,
        "caller": None if report.caller is None else report.caller._asdict(),
    }


def probe_error_json(exc: errors.UffdctlError) -> dict[str, Any]:
    """For consumers that must always get a document (Ansible facts): why even the probe
    could not run."""
    return {"error": exc.line(), "access": {"usable": False}}


# ----- demo -------------------------------------------------------------------------------------

# 1: every step has a stable name and typed fields (demo.STEPS); every run ends with one
# "summary" object carrying exit_status, also a run refused or interrupted after it started.
DEMO_SCHEMA_VERSION = 1


def summary_json(s: Summary) -> dict[str, Any]:
    """The last line of `demo --json` (uffdctl-demo(1), TIMINGS).  latency_ns: per faulting
    touch the handler resolved, in the touching thread, from just before the touch call to
    just after it returned (fault, handler, wake-up); histogram_us the same in log2 buckets.
    aborted_touches: faulting touches the abort ended (never resolved), in no figure.
    floor_ns: the same touch on an unregistered mapping (the kernel's own fault)."""
    from ..demo import log2_histogram, percentiles

    lat = percentiles(s.latency_ns)
    floor = percentiles(s.floor_ns)
    return {
        "event": "summary", "schema_version": DEMO_SCHEMA_VERSION,
        "exit_status": 0 if s.ok else 1,  # errors.OK / errors.FAILED, as the process exits
        "mode": s.mode, "pages": s.pages, "faults": s.faults,
        "expected_faults": s.expected_faults,
        **{m.name: s.kinds.get(m.name, 0) for m in abi.REGISTER_MODES},
        "messages": s.messages, "writes": s.writes,
        "verified_bytes": s.verified_bytes, "ok": s.ok,
        "latency_ns": {k: lat[k] for k in ("p50", "p90", "p99", "max") if k in lat},
        "aborted_touches": s.aborted_touches,
        "floor_ns": {k: floor[k] for k in ("p50", "p90", "p99", "max") if k in floor},
        "histogram_us": [[bound, count] for bound, count in log2_histogram(s.latency_ns)],
        "backing": s.backing, "page_size": s.page_size, "threads": s.threads, "cpus": s.cpus,
        "cpu_note": s.cpu_note, "uffd_method": s.uffd_method, "reserved_pages": s.reserved_pages,
        "mismatched_pages": s.mismatched_pages, "error": s.error,
        "elapsed_s": round(s.elapsed_s, 6), **s.extra,
    }


def event_json(e: Step | Fault) -> dict[str, Any]:
    from ..demo import Step

    if isinstance(e, Step):
        return {"event": "step", "name": e.name, "text": e.text, **e.fields}
    return {"event": "fault", "seq": e.seq, "page": e.page, "address": e.address,
            "flags": e.flag_names, "flags_mask": e.flags, "kind": e.kind, "tid": e.tid,
            "resolved_with": e.resolved_with, "modified": e.modified,
            # From the handler taking the message (read() returned) to the resolving
            # ioctl's return; the thread is woken after (demo._handle).
            "duplicate": e.duplicate, "handle_ns": e.handle_ns}


def demo_failed_json(mode: str, backing: str, cause: str, fix: str, status: int
                     ) -> dict[str, Any]:
    """The last object of a run that ended without a summary of its own (refused after it
    started, interrupted, an internal error): a consumer of the stream always gets a
    result."""
    return {"event": "summary", "schema_version": DEMO_SCHEMA_VERSION, "exit_status": status,
            "ok": False, "mode": mode, "backing": backing, "error": cause, "fix": fix}


def demo_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one line of `demo --json`: a step (demo.STEPS gives
    each name's fields), a fault, or the summary."""
    from ..demo import STEPS

    def typed(t: object) -> dict[str, Any]:
        return t if isinstance(t, dict) else {"type": t}

    steps = []
    for name, (_what, fields) in STEPS.items():
        steps.append({
            "type": "object",
            "properties": {"event": {"const": "step"}, "name": {"const": name},
                           "text": {"type": "string"},
                           **{k: typed(t) for k, t in fields.items()}},
            "required": ["event", "name", "text", *fields],
            "additionalProperties": False,
        })
    integer, string, boolean = {"type": "integer"}, {"type": "string"}, {"type": "boolean"}
    fault = {
        "type": "object",
        "properties": {"event": {"const": "fault"}, "seq": integer, "page": integer,
                       "address": integer, "flags": {"type": "array", "items": string},
                       "flags_mask": integer, "kind": string, "tid": integer,
                       "resolved_with": string, "modified": boolean, "duplicate": boolean,
                       "handle_ns": integer},
        "required": ["event", "seq", "page", "address", "flags", "kind", "tid",
                     "resolved_with", "handle_ns"],
    }
    summary = {
        "type": "object",
        "properties": {"event": {"const": "summary"}, "schema_version": integer,
                       "exit_status": integer, "ok": boolean, "mode": string,
                       "backing": string, "error": {"type": ["string", "null"]}},
        "required": ["event", "schema_version", "exit_status", "ok", "mode", "backing",
                     "error"],
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "oneOf": [*steps, fault, summary]}


# ----- inspect and ps

if TYPE_CHECKING:
    from ..fdinfo import UffdDescriptor
    from ..handlers import Holding, Service
    from ..procs import ProcessReport, PsReport, StuckThread
    from ..smaps import Region

# 2: processes with a thread stuck in a fault are listed whether or not they hold a
# descriptor; who answers their faults (service, uffds[].served/holders); where and how long
# each thread is stuck; files on tmpfs are memory "shmem", on hugetlbfs "hugetlb".
INSPECT_SCHEMA_VERSION = 2


def region_json(r: Region, report: ProcessReport) -> dict[str, Any]:
    owner = report.owners.of(r)
    return {"start": r.start, "end": r.end, "modes": r.modes, "memory": r.memory,
            "flags": r.flags, "path": r.path, "perms": r.perms, "offset": r.offset,
            "dev": r.dev, "inode": r.inode, "fs": r.fs or None,
            "size_kb": r.sizes_kb.get("Size"),
            "rss_kb": r.sizes_kb.get("Rss"), "kernel_page_size": r.kernel_page_size,
            "uffd_fds": owner.fds if owner else [],
            "uffd_fd_certain": bool(owner and owner.certain)}


def _holding_json(h: Holding) -> dict[str, Any]:
    return {"pid": h.pid, "comm": h.comm, "fd": h.fd, "state": h.state,
            "readers": [{"tid": r.tid, "call": r.call, "via": r.via or None}
                        for r in h.readers],
            "readers_known": h.readers_known}


def service_json(s: Service | None) -> dict[str, Any] | None:
    """Who answers a process's faults (handlers.Service); null where no survey was made."""
    if s is None:
        return None
    return {"verdict": s.verdict, "cause": s.cause or None, "fix": s.fix or None,
            "matched_by": s.matched_by,
            "descriptors": [{"holders": [_holding_json(h) for h in f.holders],
                             "pending": f.pending, "total": f.total,
                             "same_file_by": f.matched_by or None,
                             "serves_how": f.serves_how or None} for f in s.files]}


def _where_json(t: StuckThread) -> dict[str, Any] | None:
    w = t.where
    if w is None:
        return None
    return {"call": w.call, "nr": w.nr, "args": list(w.args), "pc": w.pc,
            "pc_mapping": w.pc_mapping,
            "regions": [{"start": a, "end": b} for a, b in w.regions],
            "regions_from": w.regions_from}


def _uffd_json(u: UffdDescriptor, report: ProcessReport) -> dict[str, Any]:
    f = report.serving.get(u.fd)
    served = None
    if f is not None and f.serves is not None:
        served = {"pid": f.serves, "comm": f.serves_comm, "how": f.serves_how}
    return {"fd": u.fd, "pending": u.pending, "total": u.total, "features": u.features,
            "features_mask": u.features_mask, "initialized": u.info.initialized,
            "ino": u.info.ino, "serves": served,
            "other_holders": None if not report.surveyed else [
                {"pid": h.pid, "comm": h.comm, "fd": h.fd} for h in (f.holders if f else [])
                if h.pid != report.pid],
            "same_file_by": f.matched_by or None if f else None,
            "readers": None if f is None else [
                {"tid": r.tid, "call": r.call, "via": r.via or None}
                for h in f.held_by(report.pid) for r in h.readers]}


def report_json(report: ProcessReport) -> dict[str, Any]:
    """The `uffdctl inspect --json` document (schema in uffdctl-inspect(1)); report_text()
    prints it."""
    return {**_report_head(report),
            "regions": [region_json(r, report) for r in report.regions],
            **_report_tail(report)}


def _report_head(report: ProcessReport) -> dict[str, Any]:
    return {
        "schema_version": INSPECT_SCHEMA_VERSION, "pid": report.pid, "comm": report.comm,
        "cmdline": report.cmdline, "state": report.state, "minflt": report.minflt,
        "all_regions": report.all_regions}


def _report_tail(report: ProcessReport) -> dict[str, Any]:
    return {
        "uffds": [_uffd_json(u, report) for u in report.uffds],
        "stuck_threads": [{"tid": t.tid, "comm": t.comm, "wchan": t.wchan, "state": t.state,
                           "seen_in": t.seen_in, "stuck_for_s": t.stuck_for,
                           "stuck_for_from": "se.exec_start in /proc/PID/task/TID/sched"
                           if t.stuck_for is not None else None,
                           "where": _where_json(t), "where_unknown": t.where_unknown or None}
                          for t in report.stuck_threads],
        "unseen_threads": None if report.unseen is None else {
            "threads": report.unseen.threads, "cause": report.unseen.cause,
            "fix": report.unseen.fix},
        "surveyed": report.surveyed,
        "service": service_json(report.service),
    }


def report_text(report: ProcessReport, chunk: int = 4096) -> Iterator[str]:
    """json_text(report_json(report)), byte for byte, in pieces of ``chunk`` regions.

    A process may have tens of thousands of registered regions: the document's dicts and its
    text were ~120 MB at 65,000, and making a dict of each region then encoding it ~12 us a
    region (issue 17).  Here the regions are never a document at once, and what regions have
    in common is encoded once: the fields that follow from the VmFlags, the path, the perms
    and the file (modes, memory, flags, path, perms) and from the device, inode, file system
    and sizes (dev ... kernel_page_size) and from the owner, two pieces of JSON text reused
    by every region with the same ones; only the addresses and the offset are written per
    region.
    json.dumps writes a dict as ``{"k": v, "k2": v2}`` and a list as ``[a, b]``, so the
    pieces joined are what it writes for the whole."""
    from .. import smaps  # here: probe's documents need none of it (start-up, issue 17)

    head = json_text(_report_head(report))
    tail = json_text(_report_tail(report))
    regions = report.regions
    if not regions:
        yield head[:-1] + ', "regions": [], ' + tail[1:]
        return
    owners = report.owners
    start = head[:-1] + ', "regions": ['  # what comes before the next chunk's first region
    # Looked up by what the fields follow from, objects by identity (smaps.shape(): regions
    # alike share their flags list, sizes and owner; the report holds them all meanwhile).
    parts: dict[tuple[object, ...], tuple[str, str]] = {}
    pieces = []
    for r in regions:
        alike = (smaps.shape(r), r.perms, r.dev, id(r.sizes_kb))
        part = parts.get(alike)
        if part is None:
            owner = owners.of(r)
            sizes = r.sizes_kb
            page = sizes.get("KernelPageSize", 0)
            part = parts[alike] = (
                json_text({"modes": r.modes, "memory": r.memory, "flags": r.flags,
                           "path": r.path, "perms": r.perms})[1:-1] + ", ",
                json_text({"dev": r.dev, "inode": r.inode, "fs": r.fs or None,
                           "size_kb": sizes.get("Size"), "rss_kb": sizes.get("Rss"),
                           "kernel_page_size": page * 1024,
                           "uffd_fds": list(owner.fds) if owner else [],
                           "uffd_fd_certain": owner.certain if owner else False})[1:])
        first, rest = part
        pieces.append(f'{{"start": {r.start}, "end": {r.end}, {first}"offset": {r.offset}, {rest}')
        if len(pieces) >= chunk:
            yield start + ", ".join(pieces)
            start, pieces = ", ", []
    # No region left over (a whole number of chunks): the last chunk ended the list.
    yield (start + ", ".join(pieces) if pieces else "") + "], " + tail[1:]


def ps_json(report: PsReport) -> dict[str, Any]:
    """The `uffdctl ps --json` document (schema in uffdctl-ps(1)); regions_by_mode holds the
    modes in use, in abi.REGISTER_MODES order."""
    return {
        "schema_version": INSPECT_SCHEMA_VERSION, "scanned": report.scanned,
        "processes": [{"pid": r.pid, "comm": r.comm, "uffds": r.uffds,
                       "registered_regions": r.registered_regions,
                       "regions_by_mode": r.regions_by_mode, "pending": r.pending,
                       "stuck_threads": r.stuck_threads, "unseen_threads": r.unseen_threads,
                       "registered_bytes": r.registered_bytes, "stuck_for_s": r.stuck_for,
                       "service": service_json(r.service),
                       "serves": [{"fd": fd, "pid": pid} for fd, pid in r.serves]}
                      for r in report.rows],
        "unseen_elsewhere": None if report.unseen_elsewhere is None else {
            "threads": report.unseen_elsewhere.threads,
            "cause": report.unseen_elsewhere.cause, "fix": report.unseen_elsewhere.fix},
        "unreadable": [{"reason": k, "processes": v} for k, v in report.unreadable.items()],
        "unreadable_total": report.unreadable_total,
    }
