"""Command line: parse options, run the logic, pick a renderer.  Nothing else lives here.

Imports of logic and renderers are inside the commands so that `uffdctl probe --json` pays
only for what it uses (no rich on the JSON path).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from . import __version__, commands, completion, errors, runner

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    # click answers EPIPE itself with exit status 1; main() ends it quietly instead.  Parsing
    # (make_context) prints --help and --version, invoke() everything else.

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        # Before anything is printed, --help included: a closed or full stdout or stderr, or
        # a locale that cannot show a character, must not change the exit status
        # (output.GuardedStream).
        from .output import guard_streams

        guard_streams()
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as exc:
            raise runner.ReaderGone from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise runner.ReaderGone from exc


class _Finite(click.FloatRange):
    """A FloatRange that also refuses nan: nan compares false with both bounds, so click's
    own range lets it through (`--timeout nan` disabled the timeout).  inf, -inf and 1e999
    are out of any bounded range already.  A usage error, exit status 2."""

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        import math

        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


# --nfd-expiry at most a year (366 days): 10**20 seconds overflowed datetime (a traceback).
NFD_EXPIRY_MAX = 366 * 24 * 3600


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", "-V", prog_name="uffdctl",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """Linux userfaultfd: what this kernel can do, minor faults as they happen,
    and which regions of a live process are registered.

    \b
    Examples:
      uffdctl probe                       what this kernel and process can do
      uffdctl probe --require minor:hugetlb   exit 1 unless minor faults work on hugetlbfs
      sudo uffdctl demo minor             watch minor faults being resolved
      uffdctl inspect 1234                which regions of pid 1234 are registered
      uffdctl ps                          every process holding a userfaultfd
    """


# ----- probe ------------------------------------------------------------------------------

def _split_requirements(values: tuple[str, ...]) -> list[str]:
    return [v for value in values for v in value.split(",") if v.strip()]


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object (schema in uffdctl-probe(1)); same as --format json.")
@click.option("--format", "-f", "fmt",
              type=click.Choice(["table", "json", "github", "env", "nfd", "facts"]),
              default=None, help="table (the default), json, github ($GITHUB_OUTPUT "
              "lines), env (eval-safe UFFD_*=...), nfd (Node Feature Discovery feature file), "
              "facts (Ansible local fact JSON); the last four exit 0 also where no "
              "userfaultfd opens, 1 only for an unmet --require.")
@click.option("--output", "-o", metavar="PATH", default=None,
              help="Write there instead of stdout: a regular file is replaced atomically "
                   "keeping its owner and mode, a symlink is written through, a device or "
                   "FIFO as a stream (github: appended, default $GITHUB_OUTPUT).")
@click.option("--nfd-expiry", type=click.IntRange(60, NFD_EXPIRY_MAX),
              default=commands.NFD_EXPIRY,
              show_default=True, metavar="SECONDS",
              help="How long NFD trusts the feature file (--format nfd).")
@click.option("--require", "-r", "require_", multiple=True, metavar="NAME[,NAME...]",
              shell_complete=completion.requirements,
              help="Exit 1 unless NAME holds: a feature (minor_hugetlbfs), a matrix cell "
                   "MODE:MEMORY (minor:hugetlb), an ioctl (continue) or one that works on a "
                   "memory type (move:shmem), met only with kernel-mode faults, NAME@user-mode "
                   "when user-mode faults are enough; kernel-faults; method=dev_userfaultfd or "
                   "method=syscall (that way opens); kernel>=5.13 (also >, <=, <, ==, !=, on "
                   "MAJOR.MINOR); hugepages:2M>=64 or hugepages>=16 (free huge pages now: "
                   "capacity). Repeatable; the language is in uffdctl-probe(1), REQUIREMENTS.")
@click.option("--require-profile", "-P", "profile_names", multiple=True, metavar="NAME",
              shell_complete=completion.profiles,
              help="Exit 1 unless everything consumer profile NAME needs holds, each "
                   "requirement reported as NAME: EXPRESSION (qemu-postcopy-anon, "
                   "firecracker-uffd-anon, criu-lazy-pages, ...). Repeatable.")
@click.option("--list-profiles", is_flag=True,
              help="Print every consumer profile: its requirements and where the consumer's "
                   "source shows each (repository, file, function); with --json as JSON. "
                   "Probes nothing; exit 0.")
@click.option("--quiet", "-q", is_flag=True, help="Print only unmet requirements.")
@click.option("--no-ioctl-check", is_flag=True,
              help="Report the ioctls UFFDIO_REGISTER lists without trying each one.")
@click.option("--pid", "-p", type=int, default=None, metavar="PID",
              shell_complete=completion.uffd_pids,
              help="The answer for that running process: a child takes on its user and mount "
                   "namespaces, ids, capabilities, no_new_privs and seccomp filters, then "
                   "probes (needs root).")
@click.option("--user", "-u", default=None, metavar="NAME|UID",
              help="The answer for that user as a fresh login: its groups, no capabilities, "
                   "no seccomp filter (needs root).")
def probe(as_json: bool, fmt: str | None, output: str | None, nfd_expiry: int,
          require_: tuple[str, ...], profile_names: tuple[str, ...], list_profiles: bool,
          quiet: bool, no_ioctl_check: bool, pid: int | None, user: str | None) -> int:
    """What this kernel's userfaultfd can do for this process, found out for real.

    \b
    Exit status: 0 every --require met, 1 a requirement missing, 2 usage error,
    3 no userfaultfd can be opened at all (table and json; github, env, nfd and facts
    exit 0 then, or 1 for an unmet --require, after writing every key), 4 --pid names no
    user process, 5 --pid/--user without root.
    \b
    Examples:
      uffdctl probe
      uffdctl probe --json | jq '.matrix[] | select(.ok) | .memory + ":" + .mode'
      uffdctl probe -q --require minor:hugetlb,continue || echo "no minor faults here"
      uffdctl probe -q --require minor:shmem@user-mode   # user-mode faults are enough
      uffdctl probe -q -r 'kernel>=5.13' -r move:anon -r 'hugepages:2M>=64'
      uffdctl probe -q --require-profile qemu-postcopy-hugetlbfs
      uffdctl probe --list-profiles
      uffdctl probe --format github            # in a GitHub Actions step with id: uffd
      eval "$(uffdctl probe --format env)"; [ "$UFFD_CELL_MINOR_SHMEM" = 1 ]
      uffdctl probe --format nfd -o /etc/kubernetes/node-feature-discovery/features.d/uffd
      sudo uffdctl probe --pid "$(pidof qemu-system-x86_64)" --require minor:shmem
      sudo uffdctl probe --user qemu
    """
    if list_profiles:
        return _list_profiles(as_json or fmt == "json", fmt, output, require_, profile_names,
                              pid, user)
    if as_json and fmt not in (None, "json"):
        raise click.UsageError("--json and --format are two ways to say the same: use one")
    fmt = "json" if as_json else fmt or "table"
    if output is not None and fmt == "table":
        raise click.UsageError("--output goes with --format json, github, env, nfd or facts")
    if pid is not None and user is not None:
        raise click.UsageError("--pid and --user ask for two different callers: use one")
    requirements = _requirements(require_) + _profile_requirements(profile_names)
    return commands.probe(fmt, output, nfd_expiry, requirements, quiet, not no_ioctl_check,
                          pid, user)


def _requirements(values: tuple[str, ...]) -> list[Any]:
    """Each --require parsed, in order; a malformed one is a usage error."""
    names = _split_requirements(values)
    if not names:
        return []
    from . import require

    try:
        return [require.parse_requirement(n) for n in names]
    except require.RequirementError as exc:
        raise click.BadParameter(str(exc), param_hint="'--require'") from None


def _profile_requirements(names: tuple[str, ...]) -> list[Any]:
    """The requirements of each --require-profile, in order; an unknown name is a usage error
    with the close ones."""
    if not names:
        return []
    from . import profiles

    out: list[Any] = []
    for name in names:
        try:
            out += profiles.profile(name).parsed()
        except profiles.UnknownProfile as exc:
            raise click.BadParameter(str(exc), param_hint="'--require-profile'") from None
    return out


def _list_profiles(as_json: bool, fmt: str | None, output: str | None,
                   require_: tuple[str, ...], profile_names: tuple[str, ...], pid: int | None,
                   user: str | None) -> int:
    """probe --list-profiles: the profiles as data, nothing probed."""
    given = [opt for opt, on in (("--require", require_), ("--require-profile", profile_names),
                                 ("--pid", pid is not None), ("--user", user is not None),
                                 ("--output", output is not None)) if on]
    if given:
        raise click.UsageError(f"--list-profiles probes nothing: drop {', '.join(given)}")
    if fmt not in (None, "json", "table"):
        raise click.UsageError("--list-profiles prints a table, or JSON with --json")
    from . import profiles

    if as_json:
        from .output import dump_json

        dump_json(profiles.to_json())
    else:
        click.echo(profiles.to_text(), nl=False)
    return errors.OK


# ----- demo -------------------------------------------------------------------------------

@cli.group(context_settings=CONTEXT)
def demo() -> None:
    """Narrated, verified demonstrations of userfaultfd's fault modes.

    \b
    Examples:
      sudo uffdctl demo minor
      uffdctl demo minor --backing shmem --pages 64 --json
      uffdctl demo missing --zero
      uffdctl demo wp --async
    """


class _Backings(click.Choice):
    """A demo's backings (demoneeds.DEMOS), read only when click needs them: demoneeds
    imports the syscall layer (memtypes, uffd), which `uffdctl ps` has no use for."""

    def __init__(self, mode: str) -> None:  # click.Choice's own would read them at once
        self.mode = mode
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        from .demoneeds import DEMOS

        return DEMOS[self.mode].backings

    @choices.setter
    def choices(self, _value: object) -> None:
        pass


def _demo_options(mode: str, default_backing: str) -> Any:
    """The options every demo shares (one engine runs them all)."""
    def wrap(f: Any) -> Any:
        opts = [
            click.option("--backing", type=_Backings(mode), default=default_backing,
                         show_default=True, help="Memory behind the registered mapping."),
            click.option("--pages", type=click.IntRange(1, 1 << 20), default=8,
                         show_default=True, help="Pages to map and fault on."),
            click.option("--page-size", metavar="SIZE", default=None,
                         help="Huge page size for hugetlb backing: 2M (default size) or 1G."),
            click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
                         help="Threads that touch every page (each from its own start)."),
            click.option("--write", is_flag=True, help="Touch by writing instead of reading."),
            click.option("--touch", type=click.Choice(["bulk", "page"]), default="bulk",
                         show_default=True,
                         help="bulk: each thread reads its pages in one call, timed whole "
                              "(per-fault cost); page: one call per page, each timed "
                              "(round trips). Writes are always page by page."),
            click.option("--cpus", type=click.Choice(["same", "spread", "any"]), default="same",
                         show_default=True,
                         help="Handler and touchers on one CPU, on two, or anywhere."),
            click.option("--timeout", type=_Finite(0.1, 3600), default=5.0,
                         show_default=True, metavar="SECONDS",
                         help="Abort when no fault is resolved for this long."),
            click.option("--no-reserve", is_flag=True,
                         help="Never grow the huge page pool (root otherwise reserves what "
                              "the run needs and gives it back)."),
            click.option("--json", "as_json", is_flag=True,
                         help="JSON lines: one per step and fault, then a summary."),
            click.option("--wrong-resolution", "wrong", is_flag=True, hidden=True),
            click.option("--stall", is_flag=True, hidden=True),
        ]
        for opt in reversed(opts):
            f = opt(f)
        return f
    return wrap


def _run_demo(mode: str, as_json: bool, page_size: str | None, no_reserve: bool,
              **options: Any) -> int:
    from . import demo as engine
    from . import scenarios

    size = None
    if page_size is not None:
        from .hugepages import parse_size

        try:
            size = parse_size(page_size)
        except (ValueError, IndexError):
            raise click.BadParameter(f"{page_size!r} is not a size like 2M or 1G",
                                     param_hint="'--page-size'") from None
    cfg = engine.DemoConfig(mode=mode, huge_page_size=size, reserve=not no_reserve, **options)
    from .output import color_wanted
    from .render import demo as view

    renderer: Any
    if as_json:
        renderer = view.JsonRenderer()
    elif color_wanted():
        renderer = view.LiveRenderer(scenarios.expected_faults(cfg),
                                     scenarios.SCENARIOS[mode].story)
    else:
        renderer = view.PlainRenderer()
    try:
        summary = scenarios.run(cfg, renderer)
    except BaseException as exc:
        if as_json and not isinstance(exc, (SystemExit, GeneratorExit)):
            renderer.failed(mode, cfg.backing, *errors.outcome(exc))
        raise
    finally:
        if hasattr(renderer, "close"):
            renderer.close()
    renderer.finish(summary)
    return errors.OK if summary.ok else errors.FAILED


DEMO_EXIT = """\b
Exit status: 0 every byte verified, 1 a byte differed or a fault was not
resolved in time, 2 usage error, 3 the environment cannot run it (no
userfaultfd, no huge pages), 130 interrupted, 143/129/131 ended by SIGTERM/
SIGHUP/SIGQUIT (everything is given back in each case)."""


@demo.command(context_settings=CONTEXT, epilog=DEMO_EXIT)
@_demo_options("minor", "hugetlb")
@click.option("--modify", is_flag=True,
              help="The handler changes each page through the plain mapping before resolving.")
def minor(**options: Any) -> int:
    """Minor faults: one memfd mapped twice, resolved with UFFDIO_CONTINUE.

    The contents are written through the plain mapping, so they are already in the page
    cache; the second mapping is registered in MINOR mode and has no page table entries, so
    each first touch is a minor fault that this process resolves with UFFDIO_CONTINUE after
    (with --modify) changing the page through the plain mapping. Every byte is verified and
    the round trip is compared with the kernel's own minor fault.

    \b
    Examples:
      sudo uffdctl demo minor
      uffdctl demo minor --backing shmem --pages 64 --threads 4 --write
      uffdctl demo minor --json | jq 'select(.event == "summary")'
    """
    return _run_demo("minor", **options)


@demo.command(context_settings=CONTEXT, epilog=DEMO_EXIT)
@_demo_options("missing", "anon")
@click.option("--zero", is_flag=True,
              help="Resolve with UFFDIO_ZEROPAGE instead of UFFDIO_COPY (not on hugetlb).")
def missing(**options: Any) -> int:
    """Missing faults: an empty region filled page by page with UFFDIO_COPY.

    Nothing is mapped in the registered region, so each first touch is a missing fault;
    the handler supplies the page with UFFDIO_COPY from a scratch page holding that page's own
    pattern (or UFFDIO_ZEROPAGE with --zero). Every byte is verified and the round trip is
    compared with the kernel's own page allocation on an unregistered region.

    \b
    Examples:
      uffdctl demo missing
      uffdctl demo missing --backing shmem --zero --threads 4
      sudo uffdctl demo missing --backing hugetlb --json
    """
    return _run_demo("missing", **options)


@demo.command(context_settings=CONTEXT, epilog=DEMO_EXIT)
@_demo_options("wp", "anon")
@click.option("--async", "wp_async", is_flag=True,
              help="UFFD_FEATURE_WP_ASYNC: the kernel resolves each write itself; the written "
                   "pages are found afterwards with PAGEMAP_SCAN and pagemap bit 57.")
@click.option("--written", type=click.IntRange(0, 1 << 20), default=None, metavar="N",
              help="How many of the pages are written (default: half).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Which pages are written (a seeded random choice).")
def wp(**options: Any) -> int:
    """Write-protect tracking: each write to a protected page is caught and recorded.

    Every page is mapped and protected with UFFDIO_WRITEPROTECT; the touchers write to some
    of them; each write stops in a WP fault (flags WP|WRITE) that the handler records and
    resolves by removing the protection. With --async (WP_ASYNC) no message is sent: the
    kernel resolves the writes itself and the written pages are found afterwards with the
    PAGEMAP_SCAN ioctl. Either way the pages found must be exactly the pages written.
    (--write is implied: the touch is always a write.)

    \b
    Examples:
      uffdctl demo wp
      uffdctl demo wp --async --pages 64 --written 10
      uffdctl demo wp --backing shmem --json | jq 'select(.event == "summary") | .found_pages'
    """
    return _run_demo("wp", **options)


# ----- inspect / ps ------------------------------------------------------------------------

def _listing_format(as_json: bool, fmt: str | None, output: str | None,
                    watch: bool = False) -> str:
    """--json, --format, --output and --watch of inspect and ps, checked as probe checks them."""
    if as_json and fmt not in (None, "json"):
        raise click.UsageError("--json and --format are two ways to say the same: use one")
    fmt = "json" if as_json else fmt or "table"
    if watch and fmt != "table":
        given = "--json" if as_json else f"--format {fmt}"
        raise click.UsageError(f"{given} and --watch do not go together: use one")
    if output is not None and (fmt == "table" or watch):
        raise click.UsageError("--output goes with --format json or prometheus, not with the "
                               "table or --watch")
    return fmt


def _deliver(text: str, output: str | None) -> None:
    """The document on standard output (UTF-8 whatever the locale: the exposition format is
    UTF-8), or to ``output`` through formats.write_file (replaced atomically, owner and mode
    kept, symlinks written through); what cannot be written is one line, the cause and the
    fix, exit status 1, as for probe --output."""
    from .render import formats

    if output is None:
        from .output import GuardedStream

        out = sys.stdout
        if isinstance(out, GuardedStream):
            out.write(text.encode())  # to the bytes below: no locale's encoding in between
        else:
            out.write(text)
        out.flush()
        return
    try:
        formats.write_file(output, text)
    except OSError as exc:
        from .output import inert

        cause, fix = formats._write_error(output, exc)
        raise errors.UffdctlError(f"cannot write {inert(output)}: {cause}", fix,
                                  errors.FAILED) from None


def _listing_options(schema: str, watch: bool = False) -> Any:
    """--json, --format and --output, the same for inspect and ps (and --watch for inspect)."""
    not_watch = "  Not with --watch." if watch else ""

    def wrap(f: Any) -> Any:
        opts = [
            click.option("--json", "as_json", is_flag=True,
                         help=f"One JSON object (schema in {schema}); same as --format json."),
            click.option("--format", "-f", "fmt",
                         type=click.Choice(["table", "json", "prometheus"]), default=None,
                         help="table (the default), json, or prometheus (the text exposition "
                              "format node_exporter's textfile collector reads; the metrics "
                              f"are in {schema}).{not_watch}"),
            click.option("--output", "-o", metavar="PATH", default=None,
                         help="Write there instead of stdout (json, prometheus): a regular "
                              "file is replaced atomically keeping its owner and mode, a "
                              "symlink is written through, a device or FIFO as a stream."
                              f"{not_watch}"),
        ]
        for opt in reversed(opts):
            f = opt(f)
        return f
    return wrap


INSPECT_EXIT = """\b
Exit status: 0 success (also when the watched process exits), 1 the
--output file could not be written, 2 usage error (a pid that is not a
number or not > 0), 4 no such user process (gone, exited while read, a
kernel thread, a zombie), 5 not allowed to read it (another user's process:
run as its owner or root), 130 interrupted (143/129/131 for
SIGTERM/SIGHUP/SIGQUIT)."""


@cli.command(context_settings=CONTEXT, epilog=INSPECT_EXIT)
@click.argument("pid", type=int, shell_complete=completion.uffd_pids)
@click.option("--all", "-a", "all_regions", is_flag=True,
              help="List every region with its decoded VmFlags, not only registered ones.")
@click.option("--watch", "-w", is_flag=True,
              help="Refresh until the process exits: regions appearing or going, pending "
                   "faults, stuck threads, page-fault rate (minflt: all the process's minor "
                   "page faults, not only userfaultfd's).")
@click.option("--interval", "-n", type=_Finite(0.05, 3600), default=1.0,
              show_default=True, metavar="SECONDS", help="Time between refreshes (--watch).")
@click.option("--count", type=click.IntRange(1), default=None, hidden=True)
@_listing_options("uffdctl-inspect(1)", watch=True)
def inspect(pid: int, all_regions: bool, watch: bool, interval: float, count: int | None,
            as_json: bool, fmt: str | None, output: str | None) -> int:
    """Which regions of process PID are registered with a userfaultfd, in which modes, on
    which descriptor, which of its threads are stuck in a fault (where, for how long), and
    who answers its faults: the process or processes holding its descriptor, and whether
    anyone is reading it (reading, stopped, not-reading, gone, unknown).

    Reads /proc/PID/smaps (VmFlags um = missing, uw = wp, ui = minor), /proc/PID/fd and
    fdinfo (pending faults, features), each thread's wchan (handle_userfault = waiting for
    a fault to be resolved), sched and syscall; and, when a thread is stuck or the
    descriptor lives elsewhere, the descriptors of every other process.

    \b
    Examples:
      uffdctl inspect 1234
      uffdctl inspect --all 1234            every region, flags decoded
      uffdctl inspect --watch -n 0.5 1234   live view until it exits
      uffdctl inspect --json 1234 | jq '.regions[] | select(.modes | index("minor"))'
      uffdctl inspect -f prometheus -o /var/lib/prometheus/node-exporter/vmm.prom 1234
    """
    from . import procs

    fmt = _listing_format(as_json, fmt, output, watch)
    if fmt == "json" and output is None:
        return commands.inspect_json(pid, all_regions)
    if fmt != "table":
        import time

        started = time.monotonic()
        report = procs.inspect_process(pid, all_regions)
        duration = time.monotonic() - started
        if fmt == "json":
            from .render.documents import report_text

            _deliver("".join(report_text(report)) + "\n", output)
        else:
            from .render.prometheus import process_metrics

            _deliver(process_metrics(report, time.time(), duration), output)
        return errors.OK
    from .output import console
    from .render import inspect as view

    con = view.widen(console())
    if watch:
        message = view.watch(pid, interval=interval, all_regions=all_regions, con=con,
                             count=count)
        if message:
            click.echo(f"uffdctl: {message}", err=True)
        return errors.OK
    view.render_report(procs.inspect_process(pid, all_regions), con, flags_detail=all_regions)
    return errors.OK


@cli.command(context_settings=CONTEXT, epilog="""\b
Exit status: 0 success (also when some processes could not be read: they
are counted and reported), 1 the --output file could not be written,
2 usage error (--json and another --format, --output with the table),
130 interrupted (143/129/131 for SIGTERM/SIGHUP/SIGQUIT).""")
@_listing_options("uffdctl-ps(1)")
def ps(as_json: bool, fmt: str | None, output: str | None) -> int:
    """Every process holding a userfaultfd or with a thread stuck in a fault: descriptors,
    registered regions by mode, pending faults, stuck threads and for how long, who answers
    (its own descriptor or another process's) and whether anyone is there.  Processes that
    cannot be read are counted, with the reason.

    \b
    Examples:
      uffdctl ps
      sudo uffdctl ps --json | jq '.processes[] | select(.stuck_threads > 0) | .pid'
      sudo uffdctl ps -f prometheus -o /var/lib/prometheus/node-exporter/uffdctl.prom
    """
    import time

    from . import procs

    fmt = _listing_format(as_json, fmt, output)
    if fmt == "json" and output is None:
        return commands.ps_json()
    started = time.monotonic()
    report = procs.scan_all()
    duration = time.monotonic() - started
    if fmt == "json":
        from .output import json_text
        from .render.documents import ps_json

        _deliver(json_text(ps_json(report)) + "\n", output)
        return errors.OK
    if fmt == "prometheus":
        from .render.prometheus import ps_metrics

        _deliver(ps_metrics(report, time.time(), duration), output)
        return errors.OK
    from .output import console
    from .render.inspect import render_ps, widen

    render_ps(report, widen(console()))
    return errors.OK


def main(argv: list[str] | None = None) -> None:
    """Entry point: the command line parsed by click, the run ended by runner.finish (every
    failure one line on stderr and a documented exit status; interrupts 128 + the signal)."""
    from . import runner

    runner.finish(lambda: _invoke(argv))


def _invoke(argv: list[str] | None) -> Any:
    """Parse and run; click's own endings made exit statuses (a usage error is 2)."""
    try:
        return cli.main(args=argv, prog_name="uffdctl", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort as exc:
        raise KeyboardInterrupt from exc  # click's word for a Ctrl-C it caught
