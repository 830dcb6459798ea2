"""The layouts real userfaultfd users run, for real, for the forensics tests.

One process (the "VMM") opens a userfaultfd, registers an anonymous region for MISSING
faults (and, with --shm, a file on /dev/shm and a memfd, for shmem), and leaves one thread
("vcpu") stuck in a fault on it.  Who answers depends on --layout:

  remote   the descriptor goes to a separate handler process over a UNIX socket
           (SCM_RIGHTS), as Firecracker and CRIU's lazy-pages daemon do; the VMM closes its
           copy unless --keep.  --handler says what the handler does:
             reading   waits in poll() on it, reads the fault and never answers it
             epoll     waits in epoll_wait() on it without reading
             idle      never looks at it (sleeps)
  thread   a thread of the VMM itself waits on it in poll() (QEMU's layout)
  alone    nobody: the VMM holds it and no thread reads it (a handler thread that died)

It prints one JSON line once the fault is stuck (pids, fds, tids, regions), then obeys stdin:
"touch" reads the stuck page again from a new thread and prints whether it got zeros (after
the handler died and every copy closed), "exit" or EOF ends.  The handler process is the
VMM's child (forked before anything else is open, it closes the VMM's descriptor and gets
it back only over the socket); it dies with the VMM (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import select
import signal
import socket
import sys
import threading
import time

from uffdctl import abi, uffd

PR_SET_NAME = 15
PR_SET_PDEATHSIG = 1
PAGE = mmap.PAGESIZE
STUCK_WCHAN = "handle_userfault"


def name(comm: bytes) -> None:
    ctypes.CDLL(None).prctl(PR_SET_NAME, comm, 0, 0, 0)


def handler_main(sock_fd: int, mode: str) -> None:
    """The handler process: receive the descriptor, say which fd it got, then do ``mode``."""
    name(b"uffd-handler")
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    sock = socket.socket(fileno=sock_fd)
    _, fds, _, _ = socket.recv_fds(sock, 16, 1)
    fd = fds[0]
    sock.sendall(json.dumps({"fd": fd, "pid": os.getpid()}).encode() + b"\n")
    if mode == "reading":
        p = select.poll()
        p.register(fd, select.POLLIN)
        while True:
            p.poll()
            try:
                os.read(fd, abi.UFFD_MSG_SIZE)  # read the fault, never answer it
            except BlockingIOError:
                pass
    elif mode == "epoll":
        ep = select.epoll()
        ep.register(fd, select.EPOLLIN | select.EPOLLET)
        while True:
            ep.poll()
    else:
        while True:
            time.sleep(3600)


def _stuck(tid: int) -> bool:
    base = f"/proc/self/task/{tid}"
    with open(f"{base}/wchan") as f:
        wchan = f.read().strip()
    if wchan == STUCK_WCHAN:
        return True
    if wchan == "0":  # x86-64 before 5.16 with ORC: the stack, or the thread asleep
        try:
            with open(f"{base}/stack") as f:
                return f"] {STUCK_WCHAN}+" in f.read()
        except OSError:
            with open(f"{base}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("S", "D")
    return False


def leave_stuck(addr: int) -> int:
    """A thread named "vcpu" reads ``addr`` and blocks there; its tid once it is asleep."""
    got: list[int] = []
    started = threading.Event()

    def vcpu() -> None:
        name(b"vcpu")
        got.append(threading.get_native_id())
        started.set()
        uffd.touch_read(addr)

    threading.Thread(target=vcpu, daemon=True).start()
    started.wait()
    deadline = time.monotonic() + 30
    while not _stuck(got[0]):
        if time.monotonic() > deadline:
            sys.exit("uffd_layouts: the vcpu thread never blocked in the fault")
        time.sleep(0.005)
    time.sleep(0.1)
    return got[0]


def shm_regions(u: uffd.Userfaultfd) -> list[dict[str, object]]:
    """A file on /dev/shm and a memfd, each mapped shared and registered for MISSING faults."""
    out = []
    path = f"/dev/shm/uffd-layouts-{os.getpid()}"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    os.unlink(path)  # the mapping keeps it; nothing left behind
    mfd = os.memfd_create("uffd-layouts")
    for kind, f in (("devshm", fd), ("memfd", mfd)):
        os.ftruncate(f, 2 * PAGE)
        addr = uffd.mmap(2 * PAGE, uffd.PROT_READ | uffd.PROT_WRITE, uffd.MAP_SHARED, f)
        u.register(addr, 2 * PAGE, abi.mode_value("missing"))
        out.append({"kind": kind, "start": addr, "end": addr + 2 * PAGE})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", choices=("remote", "thread", "alone"), default="remote")
    ap.add_argument("--handler", choices=("reading", "epoll", "idle"), default="reading")
    ap.add_argument("--keep", action="store_true", help="remote: the VMM keeps its copy")
    ap.add_argument("--shm", action="store_true", help="also register /dev/shm and memfd")
    args = ap.parse_args()
    name(b"vmm")
    u = uffd.Userfaultfd.open(nonblock=True)
    features = 0
    if args.shm:
        with uffd.Userfaultfd.open() as probe:
            features = probe.api(0)[0] & abi.FEATURE_BY_KEY["missing_shmem"].mask
    u.api(features)
    addr = uffd.mmap(4 * PAGE, uffd.PROT_READ | uffd.PROT_WRITE,
                     uffd.MAP_PRIVATE | uffd.MAP_ANONYMOUS)
    u.register(addr, 4 * PAGE, abi.mode_value("missing"))
    shm = shm_regions(u) if args.shm and features else []
    doc: dict[str, object] = {"pid": os.getpid(), "fd": u.fd, "layout": args.layout,
                              "handler_mode": args.handler,
                              "region": {"start": addr, "end": addr + 4 * PAGE}, "shm": shm}
    handler: int | None = None
    if args.layout == "remote":
        ours, theirs = socket.socketpair()
        handler = os.fork()
        if handler == 0:  # the handler: it holds nothing of the VMM's but the socket
            try:
                os.close(u.fd)
                ours.close()
                handler_main(theirs.detach(), args.handler)
            finally:
                os._exit(0)
        theirs.close()
        socket.send_fds(ours, [b"x"], [u.fd])
        got = json.loads(ours.makefile().readline())
        doc["handler"] = {"pid": handler, "fd": got["fd"]}
        doc["kept"] = args.keep
        if not args.keep:
            os.close(u.fd)
            u.fd = -1
    elif args.layout == "thread":
        ready = threading.Event()
        tids: list[int] = []

        def serve() -> None:
            name(b"uffd-thread")
            tids.append(threading.get_native_id())
            p = select.poll()
            p.register(u.fd, select.POLLIN)
            ready.set()
            while True:
                p.poll()
                try:
                    os.read(u.fd, abi.UFFD_MSG_SIZE)  # read, never answer
                except BlockingIOError:
                    pass
        threading.Thread(target=serve, daemon=True).start()
        ready.wait()
        doc["handler_tid"] = tids[0]
    doc["tid"] = leave_stuck(addr)
    time.sleep(0.2)  # the handler has read the fault (reading) by now
    print(json.dumps(doc), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "touch":
            # After the last copy closed the region is no longer registered: a new read
            # gets the page the kernel supplies (zeros), and the stuck thread was woken.
            got_zero = ctypes.string_at(addr, 8) == bytes(8)
            print(json.dumps({"zero": got_zero, "regions_left": _registered_left()}),
                  flush=True)
        elif cmd == "exit":
            break
    if handler is not None:
        try:
            os.kill(handler, signal.SIGKILL)
            os.waitpid(handler, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _registered_left() -> int:
    with open("/proc/self/smaps") as f:
        return sum(1 for line in f if line.startswith("VmFlags:") and " um" in line)


if __name__ == "__main__":
    main()
