"""The probe's answer in the formats CI systems and fleets already read.

Every format is built from the probe's JSON document (documents.probe_json), so a value means
the same thing everywhere, and every format carries the same keys, in two kinds kept apart:

Capability, a function of the kernel and the caller only (stable: fit for a node label):

- ``userfaultfd`` (= ``kernel_faults``): a descriptor that handles kernel-mode faults opens
  (the syscall or /dev/userfaultfd); ``user_mode_faults``: any opens, UFFD_USER_MODE_ONLY too;
- ``method``: syscall, dev_userfaultfd, syscall_user_mode_only or none; ``kernel``: the
  release; ``reason``: "" when kernel-mode faults work, else the one-line cause and fix;
- ``feature_<key>`` for every feature uffdctl knows, offered or not, and ``feature_bit_N`` for
  a bit it does not know that the kernel offers: offered and accepted on a fresh descriptor;
- ``cell_<mode>_<memory>`` for every register mode x memory type of the matrix (missing+wp on
  shmem-private is ``cell_missing_wp_shmem_private``): a real registration succeeded;
- ``ioctl_<key>`` for each resolving ioctl: a working cell hands it back and it did not fail
  when tried (untried for want of a free huge page is not failing).

Features, cells and ioctls hold only with kernel-mode faults (api.kernel_faults): a process
that can open nothing but a UFFD_USER_MODE_ONLY descriptor (unprivileged,
vm.unprivileged_userfaultfd=0) gets false everywhere, since the QEMU, Firecracker, vhost or
O_DIRECT user these outputs gate would fault from the kernel and get EFAULT.

Capacity, what the huge page pools hold now (volatile: never an NFD label):

- ``capacity_hugepages_free_<size>``, ``capacity_hugepages_total_<size>`` (integers) for each
  pool present (size 2m, 1g, 64k, ...);
- ``capacity_demo_<mode>_hugetlb`` for minor, missing and wp: that demo could run on hugetlb
  now, with the pages free now.

Every key of both lists is in every run, also when no userfaultfd opens at all (false, with
the cause in ``reason``) or the probe could not run (facts).  The formats:

- github: ``key=value`` lines for $GITHUB_OUTPUT (appended, as GitHub expects).
- env: ``UFFD_<KEY>=...`` lines, safe to ``eval`` (``userfaultfd`` is ``UFFD_AVAILABLE``;
  booleans 0/1, integers as they are, strings shell-quoted).
- nfd: a Node Feature Discovery local feature file (features.d): the capability keys but
  ``reason`` as prefixed labels (``_`` written ``-``), an ``# +expiry-time=`` directive,
  written to a temporary file and renamed into place.
- facts: the JSON object an Ansible executable local fact prints, every key at the top level,
  with ``available`` (= ``userfaultfd``) and ``schema_version``.

Names are valid in every format: a feature bit this uffdctl does not know yet is ``bit_N``
(abi.bit_names), and any name is reduced to [a-z0-9_] before it becomes a key, a variable or
a label.  ``--output`` never harms what it writes to (:func:`write_file`).
"""

from __future__ import annotations

import datetime as _dt
import errno as _errno
import os
import re
import shlex
import stat as _stat
import tempfile
from collections.abc import Iterable
from typing import Any

from .. import abi, demoneeds, memtypes
from ..output import json_text

# NFD accepts feature.node.kubernetes.io and its sub-namespaces without extra configuration.
NFD_PREFIX = "uffd.feature.node.kubernetes.io"
NFD_DEFAULT_EXPIRY_S = 7200
NFD_MAX_BYTES = 64 * 1024  # nfd-worker ignores a larger feature file

# The capability keys that are not a feature, a cell or an ioctl.
BASE_KEYS = ("userfaultfd", "kernel_faults", "user_mode_faults", "method", "kernel", "reason")
# The demos capacity_demo_<mode>_hugetlb speaks of, so that the keys exist also when the probe
# could not run and nothing says which there are.
DEMOS = tuple(demoneeds.DEMOS)
# Capability keys that are not labels: the cause is text for people, not for a selector.
NOT_LABELS = frozenset({"reason"})

Value = bool | int | str


def cell_name(mode: str, memory: str) -> str:
    """minor:hugetlb -> minor_hugetlb; missing+wp:shmem-private -> missing_wp_shmem_private."""
    return re.sub(r"[^a-z0-9]+", "_", f"{mode}_{memory}".lower())


def fact_name(name: str, bit: int | None = None) -> str:
    """A name as a key in every format: [a-z0-9_], no leading or trailing "_" ("bit 20", as
    uffdctl before 0.2 named an unknown feature bit, is "bit_20")."""
    key = re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")
    if not key and bit is not None:
        return f"bit_{bit}"
    return key or "unnamed"


def feature_key(name: str, bit: int | None = None) -> str:
    return "feature_" + fact_name(name, bit)


def cell_key(mode: str, memory: str) -> str:
    return "cell_" + cell_name(mode, memory)


def ioctl_key(key: str) -> str:
    return "ioctl_" + fact_name(key)


def capability_keys() -> list[str]:
    """Every capability key present in every run (feature_bit_N of a bit this uffdctl does
    not know comes on top where the kernel offers one)."""
    return [*BASE_KEYS, *(feature_key(f.key) for f in abi.FEATURES),
            *(cell_key(mode, mt.name) for mt in memtypes.MEMORY_TYPES
              for mode in abi.MATRIX_MODES),
            *(ioctl_key(i.key) for i in abi.RESOLVING_IOCTLS)]


def capacity_keys(sizes: Iterable[str]) -> list[str]:
    """Every capacity key of a run whose huge page pools have these sizes ("2m", "1g")."""
    sizes = [fact_name(s) for s in sizes]
    return [*(f"capacity_hugepages_free_{s}" for s in sizes),
            *(f"capacity_hugepages_total_{s}" for s in sizes),
            *(f"capacity_demo_{d}_hugetlb" for d in DEMOS)]


def usable_ioctls(doc: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for c in doc.get("matrix") or []:
        if c.get("ok"):
            found |= set(c.get("ioctls", [])) - set(c.get("failing_ioctls", []))
    return found


def kernel_faults(doc: dict[str, Any]) -> bool:
    """Were the API and matrix probed through descriptors that handle kernel-mode faults?"""
    return bool((doc.get("api") or {}).get("kernel_faults"))


def _kernel(doc: dict[str, Any]) -> str:
    return str((doc.get("kernel") or {}).get("release", ""))


def _one_line(text: str) -> str:
    """Control characters (line breaks too) as spaces: a value is one line in every format."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", text)


def method(doc: dict[str, Any]) -> str:
    """How the probe's descriptors were opened (an abi.OPEN_METHODS name), spelt as a fact
    name so that every format carries the same value: syscall, dev_userfaultfd,
    syscall_user_mode_only; none when nothing opens."""
    name = (doc.get("api") or {}).get("method")
    return fact_name(name) if name else "none"


def reason(doc: dict[str, Any]) -> str:
    """"" when kernel-mode faults work; else why not, and the fix, in one line: the access
    verdict (every cause once), or why the probe could not run at all."""
    if "error" in doc:  # the CLI's error line, less the program's name
        return _one_line(str(doc["error"])).removeprefix("uffdctl: ")
    if kernel_faults(doc):
        return ""
    verdict = (doc.get("access") or {}).get("verdict") or {}
    cause = verdict.get("cause") or "no userfaultfd that handles kernel-mode faults opens"
    fix = verdict.get("fix")
    return _one_line(cause + (f"; fix: {fix}" if fix else ""))


def capability(doc: dict[str, Any]) -> dict[str, Value]:
    """Every capability key (capability_keys(), plus feature_bit_N for an unknown offered
    bit): what the kernel and the caller can do, whatever the pools hold now."""
    kernel = kernel_faults(doc)
    out: dict[str, Value] = {
        "userfaultfd": kernel, "kernel_faults": kernel,
        "user_mode_faults": bool((doc.get("access") or {}).get("usable")),
        "method": method(doc), "kernel": _one_line(_kernel(doc)), "reason": reason(doc)}
    probed = {feature_key(f["name"], f.get("bit")): kernel and bool(f.get("usable"))
              for f in (doc.get("api") or {}).get("features") or []}
    for f in abi.FEATURES:
        out[feature_key(f.key)] = probed.pop(feature_key(f.key), False)
    out.update(probed)  # feature_bit_N: offered bits this uffdctl does not know
    cells = {cell_key(c["mode"], c["memory"]): kernel and bool(c.get("ok"))
             for c in doc.get("matrix") or []}
    for mt in memtypes.MEMORY_TYPES:
        for mode in abi.MATRIX_MODES:
            out[cell_key(mode, mt.name)] = cells.get(cell_key(mode, mt.name), False)
    ioctls = usable_ioctls(doc) if kernel else set()
    for ioctl in abi.RESOLVING_IOCTLS:
        out[ioctl_key(ioctl.key)] = ioctl.key in ioctls
    return out


def capacity(doc: dict[str, Any]) -> dict[str, Value]:
    """Every capacity key: the pools now (free and total per size) and whether each demo
    could run on hugetlb now.  Volatile: never a label."""
    now = doc.get("capacity") or {}
    pools = [(fact_name(str(p["size"])), p) for p in now.get("hugepages") or []]
    out: dict[str, Value] = {}
    for size, p in pools:
        out[f"capacity_hugepages_free_{size}"] = int(p.get("free") or 0)
    for size, p in pools:
        out[f"capacity_hugepages_total_{size}"] = int(p.get("total") or 0)
    demos = {d.get("demo"): d for d in now.get("demos") or []}
    for name in DEMOS:
        out[f"capacity_demo_{name}_hugetlb"] = bool((demos.get(name) or {}).get("can_run"))
    return out


def facts(doc: dict[str, Any]) -> dict[str, Value]:
    """Every key by name, capability first: the one table every format is printed from."""
    return {**capability(doc), **capacity(doc)}


def github(doc: dict[str, Any]) -> str:
    # A value with a line break would need GitHub's heredoc form: none has one (_one_line).
    lines = [f"{k}={_text(v, 'true', 'false')}" for k, v in facts(doc).items()]
    return "\n".join(lines) + "\n"


def _text(value: Value, true: str, false: str) -> str:
    if isinstance(value, bool):
        return true if value else false
    return str(value)


def env_name(key: str) -> str:
    """The variable a key is in ``--format env``: UFFD_ and the key in upper case;
    ``userfaultfd`` is UFFD_AVAILABLE."""
    if key == "userfaultfd":
        return "UFFD_AVAILABLE"
    return "UFFD_" + re.sub(r"[^A-Z0-9]", "_", key.upper())


def env(doc: dict[str, Any]) -> str:
    lines = []
    for k, v in facts(doc).items():
        value = shlex.quote(v) if isinstance(v, str) else _text(v, "1", "0")
        lines.append(f"{env_name(k)}={value}")
    return "\n".join(lines) + "\n"


def _label_value(text: str) -> str:
    """A Kubernetes label value: <= 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    v = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63]
    return v.strip("_.-")


def label_name(key: str) -> str:
    """The NFD label a capability key is (after NFD_PREFIX/): "_" written "-"."""
    return key.replace("_", "-")


def nfd(doc: dict[str, Any], now: _dt.datetime | None = None,
        expiry_s: int = NFD_DEFAULT_EXPIRY_S) -> str:
    """Capability only: a label must not change with load, so no capacity key is one, and
    ``reason`` (text for people) is not either."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    expires = (now + _dt.timedelta(seconds=expiry_s)).replace(microsecond=0)
    lines = ["# userfaultfd capabilities of this node, written by `uffdctl probe --format nfd`",
             f"# +expiry-time={expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"]
    for k, v in capability(doc).items():
        if k in NOT_LABELS:
            continue
        value = _label_value(v) if isinstance(v, str) else _text(v, "true", "false")
        if value:  # an empty value (a release nothing is left of) is no label at all
            lines.append(f"{NFD_PREFIX}/{label_name(k)}={value}")
    return "\n".join(lines) + "\n"


def ansible_facts(doc: dict[str, Any]) -> str:
    table = facts(doc)
    out: dict[str, Any] = {"available": table["userfaultfd"],
                           "schema_version": doc.get("schema_version"), **table}
    if "error" in doc:
        out["error"] = doc["error"]
    return json_text(out, indent=2, sort_keys=True) + "\n"


# ----- --output: write without harming what is there ------------------------------------------

class _CannotReplace(Exception):
    """Renaming a new file over this one would lose something: write it in place instead."""


def _umask() -> int:
    from .. import procfs

    mask = procfs.status_number(procfs.own_status(), "Umask", 8)
    if mask is not None:
        return mask
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _copy_xattrs(src: str, fd: int) -> None:
    """ACLs (system.posix_acl_access), SELinux labels and user attributes of the file being
    replaced, as far as this process may set them."""
    try:
        names = os.listxattr(src)
    except OSError:
        return
    for name in names:
        try:
            os.setxattr(fd, name, os.getxattr(src, name))
        except OSError:
            pass


def _replace(path: str, data: bytes, old: os.stat_result | None) -> None:
    """A temporary file in the same directory, renamed over ``path``: a reader (nfd-worker)
    sees the old file or the new one, never half of one.  The old file's owner, group, mode
    and extended attributes are kept; a new file gets 0666 less the umask, as the shell's
    ``>`` gives it."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".uffdctl-", dir=os.path.dirname(path) or ".")
    except PermissionError as exc:
        if old is not None:  # the directory is not ours to write: the file may be
            raise _CannotReplace from exc
        raise
    try:
        try:
            if old is not None:
                if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(fd, old.st_uid, old.st_gid)
                    except PermissionError as exc:
                        raise _CannotReplace from exc
                os.fchmod(fd, _stat.S_IMODE(old.st_mode))
                _copy_xattrs(path, fd)
            else:
                os.fchmod(fd, 0o666 & ~_umask())
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _in_place(path: str, data: bytes) -> None:
    """The file itself, kept (its inode, links, owner and mode): written over from the start,
    then cut to the new length, so that a full disk hits only where the file grows."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    finally:
        os.close(fd)


def _stream(path: str, data: bytes, flags: int = 0) -> None:
    """A device, a FIFO (waits for its reader, as the shell's ``>`` does) or, with O_APPEND,
    any file: written as it is, never replaced."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | flags, 0o666)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def write_file(path: str, text: str) -> None:
    """``--output PATH`` without harming what is there.

    A symbolic link is written through (the link stays).  A regular file with one link, or a
    new path, is replaced atomically (:func:`_replace`), keeping the old file's owner, mode
    and attributes; where that cannot be done (the directory is not writable, the owner
    cannot be given back, other hard links) the file is written in place.  A device or a FIFO
    is written as a stream.  A directory, a missing directory, a read-only file system or a
    full disk is an OSError, the target left as it was."""
    data = text.encode()
    if not path:
        raise FileNotFoundError(_errno.ENOENT, "no path given", path)
    try:
        # Through every link, /proc's magic ones too (/dev/stdout to a pipe).
        old: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        old = None
    if old is None:
        real = os.path.realpath(path)  # a new file, or where a dangling link points
        directory = os.path.dirname(real) or "."
        if not os.path.isdir(directory):
            raise FileNotFoundError(_errno.ENOENT, f"directory {directory} does not exist",
                                    directory)
        _replace(real, data, None)
    elif _stat.S_ISDIR(old.st_mode):
        raise IsADirectoryError(_errno.EISDIR, "it is a directory", path)
    elif _stat.S_ISREG(old.st_mode):
        real = os.path.realpath(path)
        try:
            now = os.stat(real)
            named = (now.st_dev, now.st_ino) == (old.st_dev, old.st_ino)
        except OSError:
            named = False  # a magic link to a file no path names (deleted, another mount)
        if named and old.st_nlink == 1:
            try:
                _replace(real, data, old)
                return
            except _CannotReplace:
                pass
        _in_place(real if named else path, data)
    elif _stat.S_ISSOCK(old.st_mode):
        raise OSError(_errno.ENXIO, "it is a socket", path)
    else:
        _stream(path, data)


def append(path: str, text: str) -> None:
    """$GITHUB_OUTPUT: appended to (created 0666 less the umask), through symbolic links."""
    if not path:
        raise FileNotFoundError(_errno.ENOENT, "no path given", path)
    if os.path.isdir(path):
        raise IsADirectoryError(_errno.EISDIR, "it is a directory", path)
    _stream(path, text.encode(), os.O_APPEND | os.O_CREAT)


# errno -> (cause, fix) for --output; the cause of anything else is its strerror.
_WRITE_CAUSES = {
    _errno.EISDIR: ("it is a directory", "give a file name inside it"),
    _errno.ENOTDIR: ("a part of the path is not a directory", "check the path"),
    _errno.EROFS: ("the file system is read-only",
                   "write to a writable file system, or remount this one read-write"),
    _errno.ENOSPC: ("no space left on the device", "free some space or write elsewhere"),
    _errno.EDQUOT: ("the disk quota is exhausted", "free some space or write elsewhere"),
    _errno.EACCES: ("permission denied",
                    "run as a user who may write there, or choose another path"),
    _errno.EPERM: ("operation not permitted",
                   "run as a user who may write there, or choose another path"),
    _errno.ENXIO: ("nothing can be written to it (a socket or a device with no driver)",
                   "give a regular file, a device or a FIFO"),
    _errno.ELOOP: ("too many levels of symbolic links", "check where the links point"),
    _errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
}


def _write_error(target: str, exc: OSError) -> tuple[str, str]:
    from ..output import inert

    if exc.errno == _errno.ENOENT:
        cause = exc.strerror if exc.strerror and exc.strerror != os.strerror(exc.errno) \
            else "a directory on the way does not exist"
        return inert(cause), "create the directory first, or give another path"
    known = _WRITE_CAUSES.get(exc.errno or 0)
    cause, fix = known or ((exc.strerror or str(exc)).lower(), "check the path")
    if exc.errno in (_errno.ENOSPC, _errno.EDQUOT) and os.path.isfile(target):
        cause += " (the file is as it was before)"
    return cause, fix


def render(fmt: str, doc: dict[str, Any], nfd_expiry: int = NFD_DEFAULT_EXPIRY_S) -> str:
    if fmt == "json":
        return json_text(doc) + "\n"
    if fmt == "nfd":
        return nfd(doc, expiry_s=nfd_expiry)
    return {"github": github, "env": env, "facts": ansible_facts}[fmt](doc)


def deliver(fmt: str, doc: dict[str, Any], output: str | None,
            nfd_expiry: int = NFD_DEFAULT_EXPIRY_S) -> None:
    """Print the document in ``fmt``, or write it to ``output``: appended for github (the
    default target there is $GITHUB_OUTPUT, as Actions expects), by :func:`write_file`
    otherwise.  What cannot be written is one line: the cause and the fix."""
    import sys

    from .. import errors

    text = render(fmt, doc, nfd_expiry)
    target = output if output is not None else (
        os.environ.get("GITHUB_OUTPUT") or None if fmt == "github" else None)
    if target is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        (append if fmt == "github" else write_file)(target, text)
    except OSError as exc:
        from ..output import inert

        cause, fix = _write_error(target, exc)
        raise errors.UffdctlError(f"cannot write {inert(target)}: {cause}", fix,
                                  errors.FAILED) from None
