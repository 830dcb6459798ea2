"""Reading /proc/PID, and the one place where what goes wrong there becomes a message.

psutil's wrap_exceptions() (psutil/_pslinux.py) is the model: every failed read of a process's
files is sorted into one of four outcomes, each an errors.UffdctlError with the cause, the fix
and the documented exit status (man/uffdctl-inspect.1):

    gone           ENOENT or ESRCH, or an empty read        errors.NO_PROCESS
    zombie         gone, but /proc/PID/stat still says Z    errors.NO_PROCESS
    kernel thread  PF_KTHREAD in /proc/PID/stat             errors.NO_PROCESS
    denied         EACCES or EPERM                          errors.NO_ACCESS

Why not psutil itself: `benchmarks/inspect_bench.py --psutil 2000` on Linux 6.18, Python
3.11, psutil 7.2.2, 2 CPUs (one busy with another job), 2,074 processes of which 2,000
`sleep`; median of 15 runs, each psutil run with process_iter()'s cache cleared, as a fresh
`uffdctl ps` finds it:

    every pid's fd links (the `ps` scan)   hand 86 ms; psutil.process_iter() + the same fd
                                           reads 163 ms (1.9x: each new Process reads
                                           /proc/PID/stat for its identity).  psutil has no
                                           call listing anon_inode links: open_files() keeps
                                           regular files (350 ms)
    state and comm of every pid            one stat read 67 ms; Process + oneshot() status()
                                           201 ms, and the stat read is still needed: psutil
                                           has neither PF_KTHREAD nor minflt on Linux
    owner uid of every pid                 os.stat 7.5 ms; Process.uids() 199 ms
    thread ids of every pid                listdir 17 ms; Process.threads() 197 ms (a stat
                                           read per thread; wchan is not in it)
    `import psutil` after uffdctl.procs    +32 ms to every `inspect` and `ps` (-X importtime,
                                           median of 21; 24-32 ms over three runs)

Another run gave the same order (fd scan 62 vs 132 ms).  Where psutil could serve it is
1.9-27x slower, and the rest (fd links, fdinfo, smaps VmFlags, PF_KTHREAD,
minflt, wchan) it does not read: uffdctl does not depend on it.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from io import FileIO

from . import abi, errors
from .output import inert
from .records import NamedTuple

# include/linux/sched.h (6.18): the task is a kernel thread; /proc/PID/stat field 9.
PF_KTHREAD = 0x00200000
# fs/proc/array.c (6.18) task_state_array: Z (zombie) and X (dead) have no memory left.
_EXITED_STATES = ("Z", "X")

GONE = frozenset({errno.ENOENT, errno.ESRCH})
DENIED = frozenset({errno.EACCES, errno.EPERM})


class Stat(NamedTuple):
    """The fields of /proc/PID/stat uffdctl reads (fs/proc/array.c do_task_stat())."""

    comm: str
    state: str
    flags: int
    minflt: int
    start_time: int | None = None  # field 22, clock ticks since boot: tells a reused pid


def parse_stat(text: str) -> Stat | None:
    """/proc/PID/stat: the name sits in parentheses and may itself hold ") " and spaces."""
    open_at, close_at = text.find("("), text.rfind(")")
    if open_at < 0 or close_at < open_at:
        return None
    rest = text[close_at + 1:].split()
    if len(rest) < 8:
        return None
    try:
        return Stat(text[open_at + 1:close_at], rest[0], int(rest[6]), int(rest[7]),
                    int(rest[19]) if len(rest) > 19 else None)
    except ValueError:
        return None


def read_text(path: str) -> str:
    # newline="": a carriage return in a name or command line is a byte like any other.
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        return f.read()


def read_detail(path: str) -> str | None:
    """A file whose absence changes nothing (a thread's wchan, a cmdline): None when it
    cannot be read, whatever the reason (the thread ended, the process is exiting)."""
    try:
        return read_text(path)
    except OSError:
        return None


# ----- the mapping -----------------------------------------------------------------------------

def no_such_process(pid: int) -> errors.UffdctlError:
    return errors.UffdctlError(f"no process with pid {pid}",
                               "check the pid with `uffdctl ps` or `ps -e`", errors.NO_PROCESS)


def exited(pid: int) -> errors.UffdctlError:
    return errors.UffdctlError(f"pid {pid} exited while it was being read",
                               "run again if it was restarted (its pid changes)",
                               errors.NO_PROCESS)


def not_a_user_process(pid: int, stat: Stat) -> errors.UffdctlError | None:
    """Why a process has no user memory to look at (a kernel thread, a zombie), or None."""
    if stat.flags & PF_KTHREAD:
        return errors.UffdctlError(
            f"pid {pid} ({inert(stat.comm)}) is a kernel thread: it has no user memory to "
            "register", "give the pid of a user process", errors.NO_PROCESS)
    if stat.state in _EXITED_STATES:
        return errors.UffdctlError(
            f"pid {pid} ({inert(stat.comm)}) is a zombie: it has exited and its memory is gone "
            "(its parent has not reaped it yet)", "give the pid of a running process",
            errors.NO_PROCESS)
    return None


def gone(pid: int) -> errors.UffdctlError:
    """A process we were reading is no longer there: a zombie if /proc/PID/stat still says
    so (psutil's _raise_if_zombie()), else it exited."""
    stat = parse_stat(read_detail(f"/proc/{pid}/stat") or "")
    return (not_a_user_process(pid, stat) if stat else None) or exited(pid)


def status_fields(pid: int | str = "self") -> dict[str, str]:
    """/proc/PID/status as {"Key": "value"} (values stripped); an OSError as open() or read()
    raises it (wrap it in reading() for a process's causes)."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def own_status() -> dict[str, str]:
    """status_fields() of this process, empty where /proc cannot be read (no /proc mounted in
    a sandbox): each caller falls back on what it can ask the kernel instead."""
    try:
        return status_fields()
    except OSError:
        return {}


def status_number(fields: dict[str, str], key: str, base: int = 10) -> int | None:
    """One number of status_fields() (CapEff is hex, Umask octal); None: absent or garbled."""
    try:
        return int(fields[key], base)
    except (KeyError, ValueError):
        return None


def has_cap_sys_ptrace() -> bool:
    """CAP_SYS_PTRACE in this process's effective set (/proc/self/status CapEff): what lets
    root, or anyone, read another user's smaps and fds (ptrace_may_access(), kernel/ptrace.c)."""
    eff = status_number(own_status(), "CapEff", 16)
    return bool(eff is not None and eff >> abi.CAP_SYS_PTRACE & 1)


def initial_userns(pid: int | str = "self") -> bool | None:
    """Whether the process is in the initial user namespace: there, uid_map is the identity
    over the whole range (kernel/user_namespace.c, init_user_ns).  None: could not tell."""
    try:
        with open(f"/proc/{pid}/uid_map") as f:
            rows = [line.split() for line in f if line.strip()]
    except OSError:
        return None
    return rows == [["0", "0", "4294967295"]]


def denied(pid: int, what: str) -> errors.UffdctlError:
    """Refused by the ptrace access check.  The fix depends on who is asking: root is never
    told to become root (a root without CAP_SYS_PTRACE, in a container or a child user
    namespace, needs the capability, not another uid)."""
    try:
        owner = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        owner = -1
    euid = os.geteuid()
    whose = (f"it belongs to uid {owner} and you are uid {euid}" if owner >= 0 else
             "it is not yours")
    if euid == 0 and not has_cap_sys_ptrace():
        cause = f"not allowed to read {what} of pid {pid}: you are root without CAP_SYS_PTRACE"
        fix = ("run with CAP_SYS_PTRACE in the process's user namespace (outside the container "
               "or sandbox that dropped it)")
    elif euid == 0 or owner == euid:
        cause = (f"not allowed to read {what} of pid {pid}: the ptrace access check refused "
                 f"({whose}; it may be undumpable, in another user namespace, or protected by "
                 "Yama or an LSM)")
        fix = "check kernel.yama.ptrace_scope and the LSM logs, or run in its namespace"
    else:
        cause = f"not allowed to read {what} of pid {pid}: {whose}"
        fix = ("run as its owner or as root: reading another process's memory map needs "
               "ptrace read access (same user and dumpable, or CAP_SYS_PTRACE)")
    return errors.UffdctlError(cause, fix, errors.NO_ACCESS)


def error(pid: int, exc: OSError, what: str) -> errors.UffdctlError:
    """The UffdctlError for a failed read of ``what`` (e.g. "the open files (/proc/PID/fd)")
    of ``pid``.  An errno outside GONE and DENIED is not a process's ordinary fate: it is
    raised as it is."""
    if exc.errno in DENIED:
        return denied(pid, what)
    if exc.errno in GONE:
        return gone(pid)
    raise exc


@contextmanager
def reading(pid: int, what: str) -> Iterator[None]:
    """``with reading(pid, "the memory map (/proc/PID/smaps)"): ...``: OSError becomes the
    UffdctlError :func:`error` says."""
    try:
        yield
    except OSError as exc:
        raise error(pid, exc, what) from None


def user_process(pid: int) -> Stat:
    """The stat of a live user process; UffdctlError when there is none by that pid, it is a
    kernel thread or a zombie."""
    try:
        stat = parse_stat(read_text(f"/proc/{pid}/stat"))
    except OSError as exc:
        if exc.errno == errno.ENOENT:  # no /proc/PID at all: the pid was never ours to read
            raise no_such_process(pid) from None
        raise error(pid, exc, "the status (/proc/PID/stat)") from None
    if stat is None:  # empty or cut short: it went while the kernel wrote it
        raise gone(pid)
    refused = not_a_user_process(pid, stat)
    if refused:
        raise refused
    return stat


# ----- a sleeping thread: where it is, how long it has not run ----------------------------

class SyscallState(NamedTuple):
    """/proc/PID/task/TID/syscall of a blocked thread (fs/proc/base.c proc_pid_syscall()):
    the call it sleeps in (abi.NOT_IN_SYSCALL for a fault taken in user mode), its six
    arguments (none then), its stack pointer and the user pc it will return to."""

    nr: int
    args: tuple[int, ...]
    sp: int
    pc: int


def parse_syscall(text: str) -> SyscallState | None:
    """"nr a0 .. a5 sp pc", or "-1 sp pc" outside a call; "running" (the thread ran while
    read) and anything else: None."""
    parts = text.split()
    try:
        if len(parts) == 3 and parts[0] == str(abi.NOT_IN_SYSCALL):
            return SyscallState(abi.NOT_IN_SYSCALL, (), int(parts[1], 16), int(parts[2], 16))
        if len(parts) == 9:
            values = [int(p, 16) for p in parts[1:]]
            return SyscallState(int(parts[0]), tuple(values[:6]), values[6], values[7])
    except ValueError:
        pass
    return None


def thread_syscall(pid: int, tid: int) -> SyscallState | OSError | None:
    """The thread's call, an OSError when it may not be read (it needs ptrace attach access:
    EACCES/EPERM to others), None when it is running or gone."""
    try:
        text = read_text(f"/proc/{pid}/task/{tid}/syscall")
    except OSError as exc:
        return None if exc.errno in GONE else exc
    return parse_syscall(text)


def _exec_start(path: str) -> float | None:
    """se.exec_start of a /proc/.../sched file, in ms of the scheduler's clock: when the
    task last started running, brought up to date while it runs (kernel/sched/debug.c
    proc_sched_show_task(); every kernel since 2.6.23 with CONFIG_SCHED_DEBUG, which Debian
    enables, and all from 6.15, where the option went)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("se.exec_start"):
                    return float(line.rpartition(":")[2])
    except (OSError, ValueError):
        pass
    return None


def _last_cpu(pid: int, tid: int) -> int | None:
    """The CPU the thread last ran on: /proc/PID/task/TID/stat field 39 (fs/proc/array.c
    do_task_stat(), task_cpu())."""
    text = read_detail(f"/proc/{pid}/task/{tid}/stat") or ""
    rest = text[text.rfind(")") + 1:].split()
    try:
        return int(rest[36])
    except (IndexError, ValueError):
        return None


def not_run_for(pid: int, tid: int) -> float | None:
    """Seconds since the thread last ran: its se.exec_start against this thread's, read
    while this thread runs on the CPU the other last ran on.  exec_start is that CPU's task
    clock (rq_clock_task(), kernel/sched/fair.c update_curr()), which excludes IRQ and steal
    time where the kernel accounts them and drifts apart between CPUs under steal (seconds,
    seen in a loaded VM): compared on one CPU the figure is that CPU's clock, a lower bound
    of the wall time.  For a thread blocked in a fault it is how long it has been blocked, a
    non-fatal signal restarting the fault being the one thing that makes it shorter.  None
    where the files are missing or the thread went."""
    cpu = _last_cpu(pid, tid)
    try:
        before = os.sched_getaffinity(0)
    except OSError:
        before = None
    moved = False
    if cpu is not None and before is not None and cpu in before:
        try:
            os.sched_setaffinity(0, {cpu})
            moved = True
        except OSError:
            pass  # a cpuset that forbids it: both clocks read anyway, maybe across CPUs
    try:
        then = _exec_start(f"/proc/{pid}/task/{tid}/sched")
        now = _exec_start("/proc/thread-self/sched")
    finally:
        if moved and before is not None:
            os.sched_setaffinity(0, before)
    if then is None or now is None:
        return None
    return max(0.0, (now - then) / 1000.0)


def mount_types(pid: int) -> dict[str, str]:
    """The file system type of each device number the process's mounts show, keyed as smaps
    writes a device ("00:2a", hex major:minor, fs/proc/task_mmu.c show_map_vma()), from
    /proc/PID/mountinfo (decimal "0:42", fs/proc_namespace.c show_mountinfo()).  Empty when it
    cannot be read."""
    out: dict[str, str] = {}
    text = read_detail(f"/proc/{pid}/mountinfo") or ""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        major, _, minor = fields[2].partition(":")
        fstype_at = fields.index("-", 6) + 1
        if fstype_at >= len(fields) or not (major.isdigit() and minor.isdigit()):
            continue
        out.setdefault(f"{int(major):02x}:{int(minor):02x}", fields[fstype_at])
    return out


def read_memory(pid: int, addr: int, size: int) -> bytes | None:
    """Bytes of another process's memory (/proc/PID/mem: ptrace attach access), None when
    they cannot be read."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.pread(fd, size, addr)
    except (OSError, OverflowError, ValueError):
        return None
    finally:
        os.close(fd)
    return data if len(data) == size else None


def epoll_targets(pid: int, epfd: int) -> list[tuple[int, int | None]] | None:
    """(fd, inode or None) of each descriptor in an epoll set: its fdinfo's "tfd:" lines
    (fs/eventpoll.c ep_show_fdinfo(); the ino field from 5.x on).  None: not readable."""
    text = read_detail(f"/proc/{pid}/fdinfo/{epfd}")
    if text is None:
        return None
    out = []
    for line in text.splitlines():
        if not line.startswith("tfd:"):
            continue
        fields = line.split()
        try:
            tfd = int(fields[1])
        except (IndexError, ValueError):
            continue
        ino = None
        for f in fields:
            if f.startswith("ino:"):
                try:
                    ino = int(f[4:], 16)
                except ValueError:
                    pass
        out.append((tfd, ino))
    return out


# ----- a big /proc file read beside the parse --------------------------------------------------

# Read in this process up to here (bytes); past it, a helper process reads the rest.  smaps of
# a process with a few hundred mappings fits, so `ps` over many small holders starts none.
READ_AHEAD_AFTER = 1 << 18
# The helper, the first that can be run: a loop in C that never waits for this interpreter's
# lock.  dd gathers 256 KiB before each write, where cat passes on each page the kernel hands
# it, waking this process 11,000 times for 46 MB (0.1 s less for 65,000 mappings, issue 17).
# Absolute paths: it runs with our privileges, so PATH does not choose it.
_DD = ("bs=256K", "iflag=fullblock", "status=none")
READ_AHEAD_HELPERS: tuple[tuple[str, ...], ...] = (
    ("/bin/dd", *_DD), ("/usr/bin/dd", *_DD), ("/bin/cat",), ("/usr/bin/cat",))
_PIPE_SIZE = 1 << 20  # F_SETPIPE_SZ: fewer, bigger reads (the default pipe holds 64 kB)


class ReadAhead:
    """readinto() over an open /proc file (unbuffered), gathering until the view is full; past
    READ_AHEAD_AFTER bytes the rest is read by a helper process and comes through a pipe.

    Why (issue 17): producing /proc/PID/smaps is the kernel's own work, done in read() (6.18
    fs/proc/task_mmu.c show_smap() -> smap_gather_stats() walks each mapping's page tables):
    ~270 ms for 65,000 mappings, a third of `inspect --json` there.  Done by another process,
    it runs on another CPU while this one parses what came before.  A thread cannot do it:
    seq_file hands out at most one buffer (a page) per read() (6.18 fs/seq_file.c
    seq_read_iter()), so a reading thread would need the interpreter lock back 11,000 times
    for 46 MB, each time waiting up to the switch interval (5 ms) behind the parse.

    The helper gets the open descriptor as its stdin and goes on from where this process
    stopped (one open file, one position): it reads nothing this process could not, and the
    open (where the kernel checks access, proc_maps_open() -> proc_mem_open()) stays here.  No
    helper to run (none installed, or a sandbox refuses the spawn), or one that fails (its read
    failed, or it was killed, as a seccomp filter kills a program it forbids): the rest is
    read here.  close() kills and reaps it, however the caller ends."""

    def __init__(self, f: FileIO, after: int = READ_AHEAD_AFTER,
                 helpers: tuple[tuple[str, ...], ...] = READ_AHEAD_HELPERS) -> None:
        self.f, self.after, self.helpers = f, after, helpers
        self.size = 0  # bytes read in all (0: the process had already gone)
        self.helper: str | None = None  # the helper that reads, once started
        self.spawned = 0  # its pid (kept once it is reaped)
        self.status: int | None = None  # its wait status, once reaped
        self._pipe: FileIO | None = None
        self._pid = 0  # the helper's pid until it is reaped

    def __call__(self, view: memoryview) -> int:
        if self._pipe is None and self.size >= self.after and self.helpers:
            self._start()
        n = 0
        while n < len(view):
            source = self.f if self._pipe is None else self._pipe
            with view[n:] as rest:
                got = source.readinto(rest)
            if got:
                n += got
            elif self._pipe is None or self._finish(self.size + n):
                break
        self.size += n
        return n

    def _start(self) -> None:
        import fcntl
        import signal

        helpers = self.helpers
        self.helpers = ()  # one try, whatever comes of it
        r, w = os.pipe2(os.O_CLOEXEC)
        null = -1
        try:
            try:
                fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
            except OSError:
                pass  # above /proc/sys/fs/pipe-max-size for this user: the default pipe
            null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            actions = [(os.POSIX_SPAWN_DUP2, self.f.fileno(), 0),
                       (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, null, 2)]
            for helper, *args in helpers:
                try:
                    # SIGPIPE is ignored here (CPython) and an ignored signal stays ignored
                    # across exec: the helper gets it back, so it ends quietly if we stop.
                    self._pid = os.posix_spawn(helper, [helper, *args], {},
                                               file_actions=actions, setsigmask=(),
                                               setsigdef=(signal.SIGPIPE,))
                except OSError:
                    continue
                self.helper, self.spawned = helper, self._pid
                self._pipe = open(r, "rb", buffering=0)  # noqa: SIM115 (close() closes it)
                r = -1
                break
        finally:
            for fd in (r, w, null):
                if fd >= 0:
                    os.close(fd)

    def _finish(self, received: int) -> bool:
        """The pipe is at its end: True when the helper read the file to its end.  Otherwise
        (killed, or its read failed) the file is read on here from the byte after the last
        that came through (seq_file seeks by regenerating up to there, 6.18 fs/seq_file.c
        seq_lseek()): the same text, or the same error with its own errno."""
        self._reap()  # it closed its end: it is exiting, if not gone already
        self.close()
        if self.status in (0, None):
            return True
        os.lseek(self.f.fileno(), received, os.SEEK_SET)
        return False

    def _reap(self) -> None:
        try:
            _, self.status = os.waitpid(self._pid, 0)
        except ChildProcessError:
            pass  # reaped by someone else (a SIGCHLD handler of a host program)
        self._pid = 0

    def close(self) -> None:
        try:
            if self._pid:
                try:
                    os.kill(self._pid, 9)  # SIGKILL: it holds nothing of ours to give back
                except ProcessLookupError:
                    pass
                self._reap()
        finally:
            if self._pipe is not None:
                self._pipe.close()
                self._pipe = None
