"""The ctypes syscall layer: userfaultfd, its ioctls, messages, and the memory calls around it.

Every failure raises :class:`UffdError` carrying the step ("userfaultfd", "open", "api",
"register", "continue", "mmap", ...) and the errno, so callers can explain it in the
kernel's terms (abi.errno_meaning) without parsing strings.

GIL note: calls through ctypes.CDLL and CFUNCTYPE release the interpreter lock, PYFUNCTYPE
(ctypes.string_at) and ctypes.PyDLL do not.  A thread that touches a registered page must do
so through :func:`touch_read`/:func:`touch_read_pages`/:func:`touch_write`/:func:`poke`/
:func:`compare` (libc calls, GIL released) so that the handler thread can run while the
toucher is blocked in the fault.  The resolving ioctls keep it held (see _held_ioctl).
"""

from __future__ import annotations

import ctypes
import errno as _errno
import io
import os
import struct
from collections.abc import Callable

from . import abi, errors
from .records import NamedTuple

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.ioctl.restype = ctypes.c_int
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.restype = ctypes.c_int
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.memcmp.restype = ctypes.c_int
_libc.memcmp.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
_libc.memset.restype = ctypes.c_void_p
_libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
_libc.lfind.restype = ctypes.c_void_p
_libc.lfind.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                        ctypes.c_size_t, ctypes.c_void_p]

MAP_FAILED = ctypes.c_void_p(-1).value
PROT_READ, PROT_WRITE = 1, 2
MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS = 0x01, 0x02, 0x20
MAP_NORESERVE = 0x4000
MFD_CLOEXEC, MFD_HUGETLB = 0x1, 0x4
MFD_HUGE_SHIFT = 26


class UffdError(OSError):
    """A failed step: ``step`` names the call, ``errno`` is the kernel's answer."""

    def __init__(self, step: str, err: int, detail: str = "") -> None:
        self.step = step
        self.detail = detail
        text = f"{step}: {_errno.errorcode.get(err, str(err))} ({abi.errno_meaning(step, err)})"
        if detail:
            text += f" [{detail}]"
        super().__init__(err, text)

    @property
    def errname(self) -> str:
        return _errno.errorcode.get(self.errno or 0, str(self.errno))


def _fail(step: str, detail: str = "") -> UffdError:
    return UffdError(step, ctypes.get_errno(), detail)


# ----- structs: every field is a u64 (s64 for results), natural alignment, no padding -----

class UffdioRange(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class UffdioApi(ctypes.Structure):
    _fields_ = [("api", ctypes.c_uint64), ("features", ctypes.c_uint64),
                ("ioctls", ctypes.c_uint64)]


class UffdioRegister(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64), ("ioctls", ctypes.c_uint64)]


class UffdioCopy(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_uint64), ("src", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("mode", ctypes.c_uint64), ("copy", ctypes.c_int64)]


class UffdioZeropage(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64), ("zeropage", ctypes.c_int64)]


class UffdioMove(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_uint64), ("src", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("mode", ctypes.c_uint64), ("move", ctypes.c_int64)]


class UffdioWriteprotect(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64)]


class UffdioContinue(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64), ("mapped", ctypes.c_int64)]


class UffdioPoison(ctypes.Structure):
    _fields_ = [("range", UffdioRange), ("mode", ctypes.c_uint64), ("updated", ctypes.c_int64)]


_STRUCTS: dict[str, type[ctypes.Structure]] = {
    "api": UffdioApi, "register": UffdioRegister, "unregister": UffdioRange,
    "wake": UffdioRange, "copy": UffdioCopy, "zeropage": UffdioZeropage, "move": UffdioMove,
    "writeprotect": UffdioWriteprotect, "continue": UffdioContinue, "poison": UffdioPoison,
}
# The request numbers encode the struct sizes; a mismatch here would be an ABI bug.
for _key, _st in _STRUCTS.items():
    assert ctypes.sizeof(_st) == abi.IOCTL_BY_KEY[_key].size, _key


def _ioctl(fd: int, key: str, arg: ctypes.Structure) -> None:
    if _libc.ioctl(fd, abi.IOCTL_BY_KEY[key].request, ctypes.addressof(arg)) != 0:
        raise _fail(key)


# The resolving ioctls (wake, copy, zeropage, writeprotect, continue) keep the interpreter
# lock held: a PyDLL function is called without Py_UNBLOCK_THREADS (CPython
# Modules/_ctypes/callproc.c, _call_function_pointer: FUNCFLAG_PYTHONAPI), where CDLL and
# fcntl.ioctl (Modules/fcntlmodule.c: Py_BEGIN_ALLOW_THREADS around ioctl()) release it.
# Why: the demo's handler figure must stop when its ioctl returns.  Released, the toucher
# that the ioctl woke on the same CPU took the lock and ran on (verifying pages) before the
# handler could read its clock: up to a millisecond "in handler" against a round trip of
# about 100 us.  Held, no other Python thread runs between the ioctl's return and the clock
# read.  Safe: none of these ioctls waits for another Python thread.  They work on the
# kernel's page tables and page cache; UFFDIO_COPY reads this process's own source page,
# which is never registered (a fault there would wait for this very handler, lock or not).
# But a thread woken while the lock is held wakes only to wait for it: 6 context switches a
# fault instead of 2, and twice the round trip (measured, --cpus same).  So the fault loop
# resolves with DONTWAKE, reads its clock, then wakes with wake(hand_over=True), the one
# call that releases the lock: the woken thread runs at once, as before.  That extra ioctl
# (about 1 us) is partly paid back by demo._handle reading at once after a wake on one CPU
# instead of polling: the round trip's median grew 3-8% (interleaved before/after runs).
# A toucher that reads all its pages in one call (touch_read_pages, the demo's --touch bulk)
# never asks for the lock while it faults: there the resolving ioctl wakes it itself, as a C
# handler's does, and the separate wake is saved (demo._handle).  Nor does it matter there
# whether the resolve holds the lock: the demo's minor handler then resolves through
# fcntl.ioctl (page_continuer(release=True)), the cheaper call.
# The struct is packed into one buffer per descriptor whose address is computed once, and
# the request and the address are passed as ready ctypes objects (no argtypes conversion):
# as cheap as fcntl.ioctl on a fresh bytearray.
_held_ioctl = ctypes.PyDLL(None, use_errno=True).ioctl
_held_ioctl.restype = ctypes.c_int
_released_ioctl = ctypes.CDLL(None, use_errno=True).ioctl  # its own pointer: no argtypes
_released_ioctl.restype = ctypes.c_int
_WORDS4 = struct.Struct("<QQQQ")
_WORDS5 = struct.Struct("<QQQQQ")
_REQ = {key: ctypes.c_ulong(abi.IOCTL_BY_KEY[key].request)
        for key in ("wake", "copy", "zeropage", "writeprotect", "continue")}
_ARG_SIZE = _WORDS5.size  # the largest of their structs (uffdio_copy)
_REQ_CONTINUE = _REQ["continue"]
_LAST_SIGNED = struct.Struct("<q")  # uffdio_continue.mapped


class _ArgBuffer:
    """The argument of a resolving ioctl: a buffer and its address, made once."""

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(_ARG_SIZE)
        self.ptr = ctypes.c_void_p(ctypes.addressof(self.buf))


def _fast_ioctl(fd: ctypes.c_int, key: str, arg: _ArgBuffer, release: bool = False) -> None:
    # fd too as a ready ctypes object: converting a Python int cost ~0.5 us a call (a third
    # of the call) on the 2-core VM.
    if (_released_ioctl if release else _held_ioctl)(fd, _REQ[key], arg.ptr) != 0:
        raise _fail(key)


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


# ----- opening a userfaultfd -------------------------------------------------------------

def syscall_number() -> int:
    nr = abi.SYSCALL_NR.get(abi.machine())
    if nr is None:
        raise errors.UffdctlError(
            f"uffdctl does not support {abi.machine()}: its userfaultfd syscall number, ioctl "
            "encoding or byte order is not the generic little-endian one uffdctl encodes",
            "run it on " + ", ".join(sorted(set(abi.SYSCALL_NR))), errors.UNAVAILABLE)
    return nr


def open_userfaultfd(flags: int = abi.O_CLOEXEC | abi.O_NONBLOCK) -> int:
    """userfaultfd(2).  Raises UffdError('userfaultfd', ...)."""
    fd = _libc.syscall(ctypes.c_long(syscall_number()), ctypes.c_int(flags))
    if fd < 0:
        raise _fail("userfaultfd")
    return int(fd)


def open_dev_userfaultfd(flags: int = abi.O_CLOEXEC | abi.O_NONBLOCK,
                         path: str = abi.DEV_USERFAULTFD) -> int:
    """A userfaultfd from /dev/userfaultfd (6.1): USERFAULTFD_IOC_NEW takes the flags by value."""
    try:
        dev = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise UffdError("open", exc.errno or _errno.EIO, path) from None
    try:
        fd = _libc.ioctl(dev, abi.USERFAULTFD_IOC_NEW, ctypes.c_void_p(flags))
        if fd < 0:
            raise _fail("ioc_new")
        return int(fd)
    finally:
        os.close(dev)


def open_with(method: abi.OpenMethod, nonblock: bool = True) -> int:
    """A new userfaultfd opened the way ``method`` says (abi.OPEN_METHODS)."""
    flags = abi.O_CLOEXEC | (abi.O_NONBLOCK if nonblock else 0) | method.flags
    return open_dev_userfaultfd(flags) if method.device else open_userfaultfd(flags)


class Message(NamedTuple):
    """A decoded struct uffd_msg (a tuple: the fault loop builds one per fault)."""

    event: int
    flags: int = 0  # pagefault
    address: int = 0  # pagefault
    ptid: int = 0  # pagefault, with THREAD_ID
    ufd: int = -1  # fork
    start: int = 0  # remap.from / remove.start / unmap.start
    end: int = 0  # remap.to / remove.end / unmap.end
    length: int = 0  # remap.len

    @property
    def event_name(self) -> str:
        e = abi.EVENT_BY_CODE.get(self.event)
        return e.name if e else f"event 0x{self.event:x}"

    @property
    def kind(self) -> str:
        return abi.fault_kind(self.flags)

    @property
    def is_write(self) -> bool:
        return bool(self.flags & abi.UFFD_PAGEFAULT_FLAG_WRITE)


_PAGEFAULT = struct.Struct("<QQI")
# A whole struct uffd_msg as the fault loop reads it: event, then the pagefault's flags,
# address and thread id (other events' fields are not needed there: decode_message has them).
MSG_RECORD = struct.Struct("<B7xQQI4x")
assert MSG_RECORD.size == abi.UFFD_MSG_SIZE


def decode_message(raw: bytes) -> Message:
    event = raw[0]
    if event == abi.UFFD_EVENT_PAGEFAULT:
        flags, address, ptid = _PAGEFAULT.unpack_from(raw, 8)
        return Message(event, flags, address, ptid)
    if event == abi.UFFD_EVENT_FORK:
        return Message(event, ufd=struct.unpack_from("<I", raw, 8)[0])
    if event == abi.UFFD_EVENT_REMAP:
        a, b, n = struct.unpack_from("<QQQ", raw, 8)
        return Message(event, start=a, end=b, length=n)
    a, b = struct.unpack_from("<QQ", raw, 8)
    return Message(event, start=a, end=b)


def decode_messages(buf: bytes) -> list[Message]:
    size = abi.UFFD_MSG_SIZE
    out = []
    for i in range(0, len(buf) - size + 1, size):
        if buf[i] == abi.UFFD_EVENT_PAGEFAULT:  # the common case, without slicing
            flags, address, ptid = _PAGEFAULT.unpack_from(buf, i + 8)
            out.append(Message(buf[i], flags, address, ptid))
        else:
            out.append(decode_message(buf[i:i + size]))
    return out


class Userfaultfd:
    """One userfaultfd.  UFFDIO_API may be called once per fd: the kernel refuses a second."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.features = 0  # what UFFDIO_API reported
        self.ioctls = 0
        # One thread at a time resolves through one descriptor (the demo's handler, the
        # probe): the buffer is shared by its resolving calls.
        self._arg = _ArgBuffer()
        self._reader: io.FileIO | None = None  # read_into's, made on first use

    @property
    def fd(self) -> int:
        return self._fd

    @fd.setter
    def fd(self, value: int) -> None:
        self._fd = value
        self._cfd = ctypes.c_int(value)  # what the resolving ioctls pass (_fast_ioctl)

    @classmethod
    def open(cls, method: abi.OpenMethod = abi.OPEN_METHODS[0], nonblock: bool = True
             ) -> Userfaultfd:
        return cls(open_with(method, nonblock))

    def __enter__(self) -> Userfaultfd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._reader = None  # reads through the number, which is closed next
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def api(self, features: int = 0) -> tuple[int, int]:
        """UFFDIO_API: returns (features offered, API ioctls mask)."""
        arg = UffdioApi(abi.UFFD_API, features, 0)
        _ioctl(self.fd, "api", arg)
        self.features, self.ioctls = int(arg.features), int(arg.ioctls)
        return self.features, self.ioctls

    def register(self, start: int, length: int, mode: int) -> int:
        """UFFDIO_REGISTER: returns the ioctls mask the kernel hands back for the range."""
        arg = UffdioRegister(UffdioRange(start, length), mode, 0)
        _ioctl(self.fd, "register", arg)
        return int(arg.ioctls)

    def unregister(self, start: int, length: int) -> None:
        _ioctl(self.fd, "unregister", UffdioRange(start, length))

    def wake(self, start: int, length: int, hand_over: bool = False) -> None:
        """UFFDIO_WAKE.  hand_over: release the interpreter lock during the call, so a woken
        Python thread runs at once (after a DONTWAKE resolve whose time has been taken)."""
        _WORDS4.pack_into(self._arg.buf, 0, start, length, 0, 0)  # uffdio_range: 2 words
        _fast_ioctl(self._cfd, "wake", self._arg, hand_over)

    def copy(self, dst: int, src: int, length: int, mode: int = 0) -> int:
        _WORDS5.pack_into(self._arg.buf, 0, dst, src, length, mode, 0)
        _fast_ioctl(self._cfd, "copy", self._arg)
        return _signed(_WORDS5.unpack_from(self._arg.buf)[4])

    def zeropage(self, start: int, length: int, mode: int = 0) -> int:
        _WORDS4.pack_into(self._arg.buf, 0, start, length, mode, 0)
        _fast_ioctl(self._cfd, "zeropage", self._arg)
        return _signed(_WORDS4.unpack_from(self._arg.buf)[3])

    def move(self, dst: int, src: int, length: int, mode: int = 0) -> int:
        arg = UffdioMove(dst, src, length, mode, 0)
        _ioctl(self.fd, "move", arg)
        return int(arg.move)

    def writeprotect(self, start: int, length: int, protect: bool, dontwake: bool = False
                     ) -> None:
        mode = (abi.UFFDIO_WRITEPROTECT_MODE_WP if protect else 0) | (
            abi.UFFDIO_WRITEPROTECT_MODE_DONTWAKE if dontwake else 0)
        _WORDS4.pack_into(self._arg.buf, 0, start, length, mode, 0)  # 3 words
        _fast_ioctl(self._cfd, "writeprotect", self._arg)

    def continue_(self, start: int, length: int, mode: int = 0) -> int:
        # The demo's minor handler calls this once a fault: _fast_ioctl written out, and
        # only the last word (mapped, signed) read back.
        arg = self._arg
        _WORDS4.pack_into(arg.buf, 0, start, length, mode, 0)
        if _held_ioctl(self._cfd, _REQ_CONTINUE, arg.ptr) != 0:
            raise _fail("continue")
        return int(_LAST_SIGNED.unpack_from(arg.buf, 24)[0])

    def page_continuer(self, base: int, page_size: int, mode: int = 0, release: bool = False
                       ) -> Callable[[int], None]:
        """continue_(base + index * page_size, page_size, mode) as a function of index, for a
        handler that resolves every fault alike (the demo's minor handler): what continue_
        looks up on each call is looked up once, and ``mapped`` is not read back.  Each
        Python call and attribute taken off a fault counts: the whole Python handler adds
        ~6 us to a C handler's ~11 us a fault on the 2-core VM (benchmarks/demo_roundtrip).

        release: call through fcntl.ioctl, which releases the interpreter lock (see
        _held_ioctl for when that matters) and costs ~0.5 us a call against ~0.85 us through
        ctypes there.  For a resolve that wakes a thread that does not need the lock (the
        demo's bulk toucher, in one libc call)."""
        if release:
            import fcntl  # only here: `probe` and `inspect` never need it (start-up)

            ioctl, fd, req = fcntl.ioctl, self.fd, abi.IOCTL_BY_KEY["continue"].request
            arg = bytearray(_WORDS4.size)
            pack = _WORDS4.pack_into

            def released(index: int) -> None:
                pack(arg, 0, base + index * page_size, page_size, mode, 0)
                try:
                    ioctl(fd, req, arg, True)  # mutable: the kernel writes ``mapped`` back
                except OSError as exc:
                    raise UffdError("continue", exc.errno or _errno.EIO) from None
            return released

        pack, buf, ptr, cfd = _WORDS4.pack_into, self._arg.buf, self._arg.ptr, self._cfd

        def held(index: int) -> None:
            pack(buf, 0, base + index * page_size, page_size, mode, 0)
            if _held_ioctl(cfd, _REQ_CONTINUE, ptr) != 0:
                raise _fail("continue")
        return held

    def poison(self, start: int, length: int, mode: int = 0) -> int:
        arg = UffdioPoison(UffdioRange(start, length), mode, 0)
        _ioctl(self.fd, "poison", arg)
        return int(arg.updated)

    def read_into(self, buf: bytearray) -> int:
        """Read the queued messages into buf (a multiple of UFFD_MSG_SIZE long): how many
        bytes were read, 0 when none is queued (O_NONBLOCK).  The fault loop's read: into one
        buffer, unpacked there (MSG_RECORD), without the bytes object and the Message tuples
        read_messages makes, which cost about 1 us a fault (measured on the 2-core VM)."""
        reader = self._reader
        if reader is None:
            reader = self._reader = io.FileIO(self.fd, "r", closefd=False)
        try:
            return reader.readinto(buf) or 0  # None: nothing queued
        except OSError as exc:
            raise UffdError("read", exc.errno or _errno.EIO) from None

    def read_messages(self, max_messages: int = 64) -> list[Message]:
        """Read every queued message (up to max_messages); [] when none (O_NONBLOCK)."""
        try:
            buf = os.read(self.fd, abi.UFFD_MSG_SIZE * max_messages)
        except BlockingIOError:
            return []
        except OSError as exc:
            raise UffdError("read", exc.errno or _errno.EIO) from None
        return decode_messages(buf)


# ----- other processes ---------------------------------------------------------------------

def kcmp_file(pid1: int, fd1: int, pid2: int, fd2: int) -> int:
    """kcmp(pid1, pid2, KCMP_FILE, fd1, fd2): 0 when both descriptors are one open file, 1 or
    2 an order between two files (kernel pointers, obfuscated but consistent within a boot:
    kernel/kcmp.c kcmp_ptr()), so files can be sorted and grouped.  OSError otherwise: ENOSYS
    (no CONFIG_KCMP), EPERM (no ptrace read access to one of them), EBADF (closed meanwhile),
    ESRCH (gone)."""
    nr = abi.KCMP_NR.get(abi.machine())
    if nr is None:
        raise OSError(_errno.ENOSYS, f"kcmp: no syscall number known for {abi.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_long(pid1), ctypes.c_long(pid2),
                        ctypes.c_long(abi.KCMP_FILE), ctypes.c_ulong(fd1), ctypes.c_ulong(fd2))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(ret)


# ----- memory ------------------------------------------------------------------------------

def mmap(length: int, prot: int, flags: int, fd: int = -1, offset: int = 0, addr: int = 0
         ) -> int:
    ptr = _libc.mmap(addr or None, length, prot, flags, fd, offset)
    if ptr is None or ptr == MAP_FAILED:
        raise _fail("mmap")
    return int(ptr)


def munmap(addr: int, length: int) -> None:
    if _libc.munmap(addr, length) != 0:
        raise _fail("munmap")


def memfd_create(name: str, flags: int = MFD_CLOEXEC, huge_page_size: int = 0) -> int:
    """memfd_create(2); huge_page_size (bytes) selects a hugetlbfs memfd of that size."""
    if huge_page_size:
        flags |= MFD_HUGETLB | (huge_page_size.bit_length() - 1) << MFD_HUGE_SHIFT
    try:
        return os.memfd_create(name, flags)
    except OSError as exc:
        raise UffdError("memfd_create", exc.errno or _errno.EIO) from None


def ftruncate(fd: int, length: int) -> None:
    try:
        os.ftruncate(fd, length)
    except OSError as exc:
        raise UffdError("ftruncate", exc.errno or _errno.EIO) from None


def poke(addr: int, data: bytes) -> None:
    """Copy bytes into memory with the GIL released (may fault on a registered page)."""
    ctypes.memmove(addr, data, len(data))


_ONE = ctypes.create_string_buffer(1)
_ONE_ADDR = ctypes.addressof(_ONE)


def touch_read(addr: int) -> None:
    """Read one byte at addr with the GIL released (the cheapest faulting read)."""
    _libc.memcmp(addr, _ONE_ADDR, 1)


def touch_write(addr: int, byte: int) -> None:
    """Write one byte at addr with the GIL released."""
    _libc.memset(addr, byte, 1)


# The bulk read touch: lfind(3) walks an array of elements one page long and calls its
# compare function on each, strcmp here, which reads the first bytes of each page only (its
# vector loads never cross a page) and stops at the key's NUL.  So one libc call, with the
# interpreter lock released all along, reads every page the way a C loop over the pages
# does: a toucher blocked in a fault and woken again goes on to the next page without
# coming back to Python, and only the handler pays Python per fault.
_STRCMP = ctypes.cast(_libc.strcmp, ctypes.c_void_p)
_KEY = ctypes.create_string_buffer(b"\xff" * 16)  # equal to a page only if it starts so
_KEY_ADDR = ctypes.addressof(_KEY)


def touch_read_pages(addr: int, pages: int, page_size: int) -> None:
    """Read the first bytes of ``pages`` consecutive pages from addr in one libc call (GIL
    released), in address order."""
    n = ctypes.c_size_t()
    while pages > 0:
        n.value = pages
        hit = _libc.lfind(_KEY_ADDR, addr, ctypes.byref(n), page_size, _STRCMP)
        if hit is None:
            return
        # A page that begins with the key's bytes ends lfind's walk (it was read): go on
        # after it.
        done = (hit - addr) // page_size + 1
        addr += done * page_size
        pages -= done


def fill(addr: int, byte: int, length: int) -> None:
    _libc.memset(addr, byte, length)


def compare(addr: int, expected: bytes) -> bool:
    """True when memory at addr equals expected; the read happens with the GIL released."""
    return _libc.memcmp(addr, expected, len(expected)) == 0


# ----- pagemap -------------------------------------------------------------------------------

class PmScanArg(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class PageRegion(ctypes.Structure):
    _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64),
                ("categories", ctypes.c_uint64)]


assert ctypes.sizeof(PmScanArg) == abi.PM_SCAN_ARG_SIZE
assert ctypes.sizeof(PageRegion) == abi.PAGE_REGION_SIZE


class ScanRegion(NamedTuple):
    """struct page_region from PAGEMAP_SCAN: a range and its categories."""

    start: int
    end: int
    categories: int


def pagemap_scan(start: int, end: int, *, flags: int = 0, category_mask: int = 0,
                 category_inverted: int = 0, category_anyof_mask: int = 0,
                 return_mask: int = 0, max_regions: int = 512, max_pages: int = 0,
                 pid: str = "self") -> tuple[list[ScanRegion], int]:
    """PAGEMAP_SCAN (6.7) over [start, end): the matching regions and where the walk ended."""
    vec = (PageRegion * max_regions)()
    arg = PmScanArg(abi.PM_SCAN_ARG_SIZE, flags, start, end, 0, ctypes.addressof(vec),
                    max_regions, max_pages, category_inverted, category_mask,
                    category_anyof_mask, return_mask or category_mask or category_anyof_mask)
    try:
        fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UffdError("pagemap", exc.errno or _errno.EIO) from None
    try:
        n = _libc.ioctl(fd, abi.PAGEMAP_SCAN, ctypes.addressof(arg))
        if n < 0:
            raise _fail("pagemap_scan")
    finally:
        os.close(fd)
    return [ScanRegion(int(r.start), int(r.end), int(r.categories)) for r in vec[:n]], \
        int(arg.walk_end)


def pagemap_entries(addr: int, pages: int, page_size: int = 0, pid: str = "self") -> list[int]:
    """The raw 64-bit /proc/PID/pagemap entries of ``pages`` base pages from addr."""
    page_size = page_size or os.sysconf("SC_PAGE_SIZE")
    try:
        with open(f"/proc/{pid}/pagemap", "rb", buffering=0) as f:
            f.seek(addr // page_size * abi.PAGEMAP_ENTRY_SIZE)
            raw = f.read(pages * abi.PAGEMAP_ENTRY_SIZE)
    except OSError as exc:
        raise UffdError("pagemap", exc.errno or _errno.EIO) from None
    return list(struct.unpack(f"<{len(raw) // 8}Q", raw))
