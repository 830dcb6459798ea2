"""Do no harm, each class against the real tool in the real condition:

1. ``--output`` on a device node, a symbolic link, a file with its own owner and mode, a FIFO,
   a hard link, a directory, a missing directory, a read-only and a full file system (tmpfs
   mounts and mknod in a private mount namespace: nothing outside it changes).
4. Closed stdout and stderr (``>&-``), a full disk (/dev/full, a full tmpfs), non-UTF-8 locales
   (C, C without UTF-8 mode, ISO-8859-1), TERM=dumb, tiny and huge COLUMNS on a real pty: the
   exit status of a normal run, never a traceback.
5. A real process whose name, command line and mapped path hold every byte 0x01-0xff: printed
   inert in tables and live views, one representation (U+FFFD) in JSON.
6. Numeric options refuse nan, inf and out-of-range values with a usage error.
7. A feature bit uffdctl does not know yet: valid names in every format, nameable in --require.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import IS_ROOT, ROOT, run_on_pty

from uffdctl import abi, probe, require
from uffdctl.render import documents, formats

STATUSES = {0, 1, 2, 3, 4, 5, 130}
ALL = bytes(range(1, 256))
LOCALE_VARS = ("LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "PYTHONIOENCODING", "PYTHONUTF8",
               "PYTHONLEGACYWINDOWSSTDIO", "NO_COLOR", "GITHUB_OUTPUT", "COLUMNS", "LINES",
               "TERM", "UFFDCTL_DEBUG")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LOCALE_VARS}
    env.setdefault("LANG", "C.UTF-8")
    env.update(extra)
    return env


def _uffdctl(*args: str, env: dict[str, str] | None = None, shell: str | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """``python -m uffdctl ARGS`` with bytes captured; ``shell`` adds redirections (">&-")."""
    cmd = [sys.executable, "-m", "uffdctl", *args]
    if shell is not None:
        cmd = ["sh", "-c", f'exec "$@" {shell}', "sh", *cmd]
    return subprocess.run(cmd, capture_output=True, env=env or _env(NO_COLOR="1"),
                          timeout=timeout, cwd=ROOT)


def _no_traceback(res: subprocess.CompletedProcess[bytes]) -> None:
    err = res.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and "internal error" not in err, err
    assert res.returncode in STATUSES, (res.returncode, err)


def _pty(args: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, bytes]:
    """Run ``python -m uffdctl ARGS`` on a real pseudo-terminal; its exit status and output."""
    return run_on_pty([sys.executable, "-m", "uffdctl", *args], env, timeout)


# What rich itself writes on a terminal: SGR colours, cursor moves, line erases, cursor hiding.
_RICH_CSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


def _assert_inert(out: bytes, terminal: bool = False) -> str:
    """No byte of the output can act on a terminal: valid UTF-8, no C0 control but newline
    (and carriage return on a pty), no DEL, no C1 control (U+0080-U+009F or a raw 0x80-0x9f),
    and on a pty no escape sequence but rich's own CSI ones."""
    if terminal:
        out = _RICH_CSI.sub(b"", out)
    text = out.decode("utf-8")  # strict: a raw 0x9b or any invalid byte fails here
    allowed = "\n\r" if terminal else "\n"
    bad = [c for c in text if (ord(c) < 0x20 and c not in allowed) or 0x7F <= ord(c) < 0xA0]
    assert not bad, f"raw control characters reach the terminal: {bad[:10]!r}"
    return text


def _escaped(data: bytes) -> str:
    """How a table shows bytes: printable ASCII as it is, every other byte as \\xNN (these are
    runs of single bytes that are never valid UTF-8 together)."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in data)


def _squeezed(text: str) -> str:
    """Table cells fold over lines between borders: compare without spaces, borders, breaks."""
    return re.sub(r"[\s|]", "", text)


# ----- 1. --output ----------------------------------------------------------------------------

# Runs as root in a private mount namespace (unshare -m): every mount and node it makes
# disappears with it.  Prints one JSON object with what each case did.
OUTPUT_SCENARIO = r'''
import json, os, stat, subprocess, sys, threading
mnt, root = sys.argv[1], sys.argv[2]
env = {**os.environ, "NO_COLOR": "1"}
env.pop("GITHUB_OUTPUT", None)
os.umask(0o022)

def mount(*args):
    subprocess.run(["mount", *args], check=True)

def uffdctl(*args, stdout=subprocess.PIPE):
    r = subprocess.run([sys.executable, "-m", "uffdctl", *args], stdout=stdout,
                       stderr=subprocess.PIPE, env=env, cwd=root, timeout=120)
    return {"status": r.returncode, "stderr": r.stderr.decode("utf-8", "backslashreplace"),
            "stdout": (r.stdout or b"").decode("utf-8", "backslashreplace")}

def write(path, fmt="env"):
    return uffdctl("probe", "--no-ioctl-check", "--format", fmt, "-o", path)

def st(path):
    s = os.lstat(path)
    return {"mode": s.st_mode, "uid": s.st_uid, "gid": s.st_gid, "ino": s.st_ino,
            "rdev": s.st_rdev, "nlink": s.st_nlink}

def text(path):
    with open(path) as f:
        return f.read()

def put(path, data):
    with open(path, "w") as f:
        f.write(data)

out = {}
mount("-t", "tmpfs", "-o", "size=4m,mode=0755", "uffdctl-test", mnt)
d = mnt

# A symbolic link to a file with its own owner and mode: written through, both kept.
put(f"{d}/target", "old\n")
os.chown(f"{d}/target", 1234, 5678)
os.chmod(f"{d}/target", 0o640)
os.symlink("target", f"{d}/link")
out["symlink"] = {**write(f"{d}/link"), "link": os.path.islink(f"{d}/link"),
                  "readlink": os.readlink(f"{d}/link"), "target": st(f"{d}/target"),
                  "text": text(f"{d}/target")}

# A link to nothing yet: the file is made where it points, the link stays.
os.symlink("made", f"{d}/dangling")
out["dangling"] = {**write(f"{d}/dangling"), "link": os.path.islink(f"{d}/dangling"),
                   "made": st(f"{d}/made"), "text": text(f"{d}/made")}

# A regular file with its own owner and mode (no link).
put(f"{d}/owned", "old\n")
os.chown(f"{d}/owned", 4321, 8765)
os.chmod(f"{d}/owned", 0o600)
out["owned"] = {**write(f"{d}/owned", "nfd"), "after": st(f"{d}/owned"),
                "text": text(f"{d}/owned")}

# A file with a second hard link: written in place, the link keeps seeing it.
put(f"{d}/hard", "old\n")
os.link(f"{d}/hard", f"{d}/hard2")
before = st(f"{d}/hard")
out["hardlink"] = {**write(f"{d}/hard"), "before": before, "after": st(f"{d}/hard"),
                   "text": text(f"{d}/hard"), "other": text(f"{d}/hard2")}

# A new path: 0666 less the umask, like the shell's >.
out["new"] = {**write(f"{d}/new", "facts"), "after": st(f"{d}/new"), "text": text(f"{d}/new")}

# Device nodes: written as streams, never replaced.
os.mknod(f"{d}/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
os.mknod(f"{d}/full", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
out["null"] = {**write(f"{d}/null"), "after": st(f"{d}/null")}
out["devfull"] = {**write(f"{d}/full"), "after": st(f"{d}/full")}
os.symlink("null", f"{d}/null-link")
out["null_link"] = {**write(f"{d}/null-link"), "link": os.path.islink(f"{d}/null-link"),
                    "after": st(f"{d}/null")}

# /dev/stdout, a link to a pipe here (magic: no path names the pipe): written as a stream.
out["dev_stdout"] = {**uffdctl("probe", "--no-ioctl-check", "--format", "env", "-o",
                               "/dev/stdout"), "link": os.path.islink("/dev/stdout")}

# A FIFO: its reader gets the document.
os.mkfifo(f"{d}/fifo")
got = []
reader = threading.Thread(target=lambda: got.append(text(f"{d}/fifo")))
reader.start()
res = write(f"{d}/fifo")
reader.join(30)
out["fifo"] = {**res, "after": st(f"{d}/fifo"), "read": got[0] if got else None}

# github: appended, through the link, the owner and mode kept.
out["github"] = {**uffdctl("probe", "--no-ioctl-check", "--format", "github", "-o",
                           f"{d}/link"),
                 "link": os.path.islink(f"{d}/link"), "target": st(f"{d}/target"),
                 "text": text(f"{d}/target")}

# What cannot be written: one line each, nothing left behind.
os.mkdir(f"{d}/dir")
out["directory"] = {**write(f"{d}/dir"), "after": st(f"{d}/dir"), "list": os.listdir(f"{d}/dir")}
out["missing_dir"] = write(f"{d}/no/such/dir/uffd")
out["escape_in_name"] = write(f"{d}/no\x1b[31mdir\x9b/uffd")
out["empty"] = write("")
os.mkdir(f"{d}/ro")
mount("-t", "tmpfs", "-o", "size=64k", "uffdctl-ro", f"{d}/ro")
put(f"{d}/ro/uffd", "old\n")
mount("-o", "remount,ro", f"{d}/ro")
out["readonly_existing"] = {**write(f"{d}/ro/uffd"), "text": text(f"{d}/ro/uffd")}
out["readonly_new"] = {**write(f"{d}/ro/new"), "exists": os.path.exists(f"{d}/ro/new")}

os.mkdir(f"{d}/small")
mount("-t", "tmpfs", "-o", "size=64k", "uffdctl-full", f"{d}/small")
put(f"{d}/small/uffd", "old\n")
open(f"{d}/small/stdout", "w").close()
try:
    with open(f"{d}/small/filler", "wb") as f:
        while True:
            f.write(b"x" * 4096)
            f.flush()
except OSError:
    pass
out["full_existing"] = {**write(f"{d}/small/uffd", "nfd"), "text": text(f"{d}/small/uffd"),
                        "list": sorted(os.listdir(f"{d}/small"))}
out["full_new"] = {**write(f"{d}/small/new", "nfd"), "list": sorted(os.listdir(f"{d}/small"))}
with open(f"{d}/small/stdout", "wb") as f:
    out["full_stdout"] = uffdctl("probe", "--json", "--no-ioctl-check", stdout=f)
with open(f"{d}/small/stdout", "wb") as f:
    out["full_stdout_table"] = uffdctl("probe", "--no-ioctl-check", stdout=f)
out["list"] = sorted(os.listdir(d))
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def output_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not IS_ROOT or shutil.which("unshare") is None or shutil.which("mount") is None:
        pytest.skip("needs root, unshare and mount (a private mount namespace)")
    mnt = tmp_path_factory.mktemp("output") / "mnt"
    mnt.mkdir()
    res = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable, "-c",
                          OUTPUT_SCENARIO, str(mnt), str(ROOT)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert not os.listdir(mnt), "the tmpfs leaked out of the private namespace"
    cases: dict[str, Any] = json.loads(res.stdout)
    return cases


def _ok(case: dict[str, Any]) -> None:
    assert case["status"] == 0 and case["stderr"] == "", case


def _refused(case: dict[str, Any], cause: str) -> str:
    assert case["status"] == 1, case
    (line,) = case["stderr"].splitlines()
    assert line.startswith("uffdctl: cannot write") and cause in line and "(fix: " in line, line
    return str(line)


def test_output_writes_through_a_symlink_keeping_owner_and_mode(
        output_cases: dict[str, Any]) -> None:
    import stat

    c = output_cases["symlink"]
    _ok(c)
    assert c["link"] and c["readlink"] == "target"
    assert (c["target"]["uid"], c["target"]["gid"]) == (1234, 5678)
    assert stat.S_IMODE(c["target"]["mode"]) == 0o640 and stat.S_ISREG(c["target"]["mode"])
    assert "UFFD_AVAILABLE=1" in c["text"]
    d = output_cases["dangling"]
    _ok(d)
    assert d["link"] and "UFFD_AVAILABLE=1" in d["text"]
    g = output_cases["github"]
    _ok(g)
    assert g["link"] and (g["target"]["uid"], g["target"]["gid"]) == (1234, 5678)
    assert stat.S_IMODE(g["target"]["mode"]) == 0o640
    assert g["text"].startswith(c["text"]) and "userfaultfd=true" in g["text"]  # appended


def test_output_replaces_a_file_keeping_owner_and_mode(output_cases: dict[str, Any]) -> None:
    import stat

    c = output_cases["owned"]
    _ok(c)
    assert (c["after"]["uid"], c["after"]["gid"]) == (4321, 8765)
    assert stat.S_IMODE(c["after"]["mode"]) == 0o600
    assert "# +expiry-time=" in c["text"]
    n = output_cases["new"]
    _ok(n)
    assert stat.S_IMODE(n["after"]["mode"]) == 0o644 and (n["after"]["uid"] == 0)
    assert json.loads(n["text"])["available"] is True
    h = output_cases["hardlink"]
    _ok(h)
    assert h["after"]["ino"] == h["before"]["ino"] and h["after"]["nlink"] == 2
    assert h["text"] == h["other"] and "UFFD_AVAILABLE=1" in h["text"]
    assert not [n for n in output_cases["list"] if n.startswith(".uffdctl-")]


def test_output_writes_devices_and_fifos_as_streams(output_cases: dict[str, Any]) -> None:
    import stat

    for name in ("null", "null_link"):
        c = output_cases[name]
        _ok(c)
        assert stat.S_ISCHR(c["after"]["mode"]) and c["after"]["rdev"] == os.makedev(1, 3)
    assert output_cases["null_link"]["link"]
    full = output_cases["devfull"]
    assert stat.S_ISCHR(full["after"]["mode"]) and full["after"]["rdev"] == os.makedev(1, 7)
    _refused(full, "no space left on the device")
    f = output_cases["fifo"]
    _ok(f)
    assert stat.S_ISFIFO(f["after"]["mode"]) and "UFFD_AVAILABLE=1" in (f["read"] or "")
    pipe = output_cases["dev_stdout"]
    assert pipe["status"] == 0 and pipe["stderr"] == "" and pipe["link"], pipe
    assert pipe["stdout"].startswith("UFFD_AVAILABLE=1\n")


def test_output_refuses_what_cannot_be_written_in_one_line(
        output_cases: dict[str, Any]) -> None:
    import stat

    d = output_cases["directory"]
    _refused(d, "it is a directory")
    assert stat.S_ISDIR(d["after"]["mode"]) and d["list"] == []
    _refused(output_cases["missing_dir"], "does not exist")
    line = _refused(output_cases["escape_in_name"], "does not exist")
    assert "\x1b" not in line and "\x9b" not in line and "\\x1b[31mdir\\x9b" in line
    _refused(output_cases["empty"], "no path given")
    ro = output_cases["readonly_existing"]
    _refused(ro, "read-only")
    assert ro["text"] == "old\n"
    _refused(output_cases["readonly_new"], "read-only")
    assert not output_cases["readonly_new"]["exists"]
    full = output_cases["full_existing"]
    _refused(full, "no space left on the device (the file is as it was before)")
    assert full["text"] == "old\n"
    assert full["list"] == ["filler", "stdout", "uffd"]  # no temporary file left
    _refused(output_cases["full_new"], "no space left")
    assert output_cases["full_new"]["list"] == ["filler", "stdout", "uffd"]


# As uid 65534 in a private mount namespace: where a rename would lose the owner, or the
# directory is not writable, the file is written in place.
IN_PLACE_SCENARIO = r'''
import json, os, subprocess, sys
mnt, root, python, env_json, nobody_json = sys.argv[1:6]
env, nobody = json.loads(env_json), json.loads(nobody_json)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "uffdctl-test", mnt],
               check=True)

def put(path, owner, mode):
    with open(path, "w") as f:
        f.write("old\n")
    os.chown(path, *owner)
    os.chmod(path, mode)

def run(path):
    cmd = [python, "-m", "uffdctl", "probe", "--no-ioctl-check", "-f", "facts", "-o", path]
    r = subprocess.run(nobody + cmd, capture_output=True, text=True, env=env, cwd="/")
    s = os.stat(path)
    with open(path) as f:
        text = f.read()
    return {"status": r.returncode, "stderr": r.stderr, "ino": s.st_ino, "uid": s.st_uid,
            "gid": s.st_gid, "mode": s.st_mode & 0o7777, "text": text,
            "list": sorted(os.listdir(os.path.dirname(path)))}

out = {}
os.mkdir(f"{mnt}/closed", 0o755)  # not writable by 65534: no temporary file there
put(f"{mnt}/closed/shared", (1234, 65534), 0o664)
out["closed_before"] = os.stat(f"{mnt}/closed/shared").st_ino
out["closed"] = run(f"{mnt}/closed/shared")
os.mkdir(f"{mnt}/sticky")
os.chmod(f"{mnt}/sticky", 0o1777)  # writable, but the owner 1234 cannot be given back
put(f"{mnt}/sticky/shared", (1234, 65534), 0o664)
out["sticky_before"] = os.stat(f"{mnt}/sticky/shared").st_ino
out["sticky"] = run(f"{mnt}/sticky/shared")
put(f"{mnt}/sticky/mine", (65534, 65534), 0o640)
out["mine_before"] = os.stat(f"{mnt}/sticky/mine").st_ino
out["mine"] = run(f"{mnt}/sticky/mine")
print(json.dumps(out))
'''


def test_output_as_another_user_keeps_the_file_it_cannot_replace(
        nobody_python: tuple[str, dict[str, str]]) -> None:
    from conftest import NOBODY

    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (a private mount namespace)")
    python, env = nobody_python
    mnt = tempfile.mkdtemp(prefix="uffdctl-mnt-")  # in /tmp: a path uid 65534 can traverse
    try:
        os.chmod(mnt, 0o755)
        res = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                              "-c", IN_PLACE_SCENARIO, mnt, str(ROOT), python, json.dumps(env),
                              json.dumps(NOBODY)], capture_output=True, text=True, timeout=300)
    finally:
        os.rmdir(mnt)  # empty: the tmpfs lived in the namespace only
    assert res.returncode == 0, res.stderr
    cases = json.loads(res.stdout)
    for name in ("closed", "sticky"):
        c = cases[name]
        assert c["status"] == 0 and c["stderr"] == "", c
        assert c["ino"] == cases[f"{name}_before"], "replaced, not written in place"
        assert (c["uid"], c["gid"], c["mode"]) == (1234, 65534, 0o664)
        assert json.loads(c["text"])["kernel"] == os.uname().release
        assert c["list"] == ["shared"]  # no temporary file left behind
    mine = cases["mine"]
    assert mine["status"] == 0 and mine["ino"] != cases["mine_before"]  # renamed into place
    assert (mine["uid"], mine["gid"], mine["mode"]) == (65534, 65534, 0o640)
    assert mine["list"] == ["mine", "shared"]


# ----- 4. streams, terminals, locales -----------------------------------------------------------

def test_stdout_on_a_full_file_system_keeps_the_exit_status(
        output_cases: dict[str, Any]) -> None:
    for name in ("full_stdout", "full_stdout_table"):
        c = output_cases[name]
        assert c["status"] == 0, c
        (line,) = c["stderr"].splitlines()
        assert line.startswith("uffdctl: cannot write to standard output: no space left")


# --no-ioctl-check: the ioctl checks race with other processes for free huge pages (see
# probe._check_ioctl); what is tested here is the streams, not the probe.
STREAM_COMMANDS = [
    (["probe", "--json", "--no-ioctl-check"], True),
    (["probe", "--no-ioctl-check"], True),
    (["probe", "-q", "--no-ioctl-check", "-r", "bit_63"], False),  # status 1, stderr only
    (["ps"], True),
    (["demo", "missing", "--pages", "2"], True),
    (["probe", "--bogus"], False),  # status 2
    (["--help"], True),
]


@pytest.mark.parametrize(("args", "writes_stdout"), STREAM_COMMANDS,
                         ids=[" ".join(a) for a, _ in STREAM_COMMANDS])
def test_closed_and_full_streams_keep_the_exit_status(args: list[str],
                                                      writes_stdout: bool) -> None:
    normal = _uffdctl(*args)
    _no_traceback(normal)
    for redirect in (">&-", "2>&-", ">&- 2>&-", ">/dev/full", "2>/dev/full",
                     ">/dev/full 2>/dev/full"):
        res = _uffdctl(*args, shell=redirect)
        _no_traceback(res)
        assert res.returncode == normal.returncode, (redirect, res.stderr)
        if redirect in (">&-", ">/dev/full") and writes_stdout:
            cause = "it is closed" if "&-" in redirect else "no space left on device"
            lines = res.stderr.decode().splitlines()
            assert f"uffdctl: cannot write to standard output: {cause} (its output is lost; " \
                   "the exit status is the command's own)" in lines
            assert len(lines) == len(normal.stderr.decode().splitlines()) + 1


def test_closed_stdout_is_not_reused_by_a_file(tmp_path: Path) -> None:
    """With fd 1 closed, the next file opened would get it; uffdctl holds it with /dev/null."""
    target = tmp_path / "uffd"
    res = _uffdctl("probe", "--no-ioctl-check", "--format", "env", "-o", str(target),
                   shell=">&-")
    assert res.returncode == 0 and res.stderr == b"", res.stderr
    assert "UFFD_AVAILABLE=1" in target.read_text()


# ----- the process whose names hold every byte ---------------------------------------------------

BYTE_HOLDER = r'''
"""argv[1] holds every byte 0x01-0xff (its command line); a registered shared mapping of a
tmpfs file whose name holds every byte but "/" (its path); 17 children named (comm) with 15
of the bytes each, holding the userfaultfd.  One JSON line, then waits for stdin to close."""
import ctypes, json, mmap, os, sys

from uffdctl import abi, uffd

ALL = bytes(range(1, 256))
u = uffd.Userfaultfd.open()
u.api(abi.FEATURE_BY_KEY["missing_shmem"].mask)
path = os.fsencode(sys.argv[2]) + b"/" + ALL.replace(b"/", b"")
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
os.ftruncate(fd, mmap.PAGESIZE)
area = mmap.mmap(fd, mmap.PAGESIZE, mmap.MAP_SHARED)
addr = ctypes.addressof(ctypes.c_char.from_buffer(area))
u.register(addr, mmap.PAGESIZE, abi.mode_value("missing"))
children = []
r, w = os.pipe()  # the children wait for its end: the parent closing w
for i in range(0, len(ALL), 15):
    pid = os.fork()
    if pid == 0:
        os.close(w)
        ctypes.CDLL(None).prctl(15, ALL[i:i + 15], 0, 0, 0)  # PR_SET_NAME
        os.read(r, 1)
        os._exit(0)
    children.append(pid)
print(json.dumps({"pid": os.getpid(), "children": children, "start": addr}), flush=True)
sys.stdin.read()
os.close(w)
for pid in children:
    os.waitpid(pid, 0)
'''


@pytest.fixture(scope="module")
def byte_holder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm (tmpfs) for the mapped file")
    script = tmp_path_factory.mktemp("holder") / "holder.py"
    script.write_text(BYTE_HOLDER)
    shm = tempfile.mkdtemp(prefix="uffdctl-bytes-", dir="/dev/shm")
    proc = subprocess.Popen([sys.executable, str(script), os.fsdecode(ALL), shm],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        if not line:
            proc.wait(30)
            pytest.skip("no userfaultfd for the byte holder")
        yield json.loads(line)
    finally:
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)  # its own session: the holder and its children only
            proc.wait(30)
        finally:
            shutil.rmtree(shm, ignore_errors=True)


def _comm_chunks() -> list[bytes]:
    return [ALL[i:i + 15] for i in range(0, len(ALL), 15)]


def _check_tables(ps: str, inspect: str) -> None:
    """Every comm chunk in ps; the path (every byte but "/") and the command line's start in
    inspect, each byte escaped."""
    for chunk in _comm_chunks():
        assert _escaped(chunk) in ps, _escaped(chunk)
    # The kernel writes a newline in a path as \012 (fs/seq_file.c mangle_path()).
    name = _escaped(ALL.replace(b"/", b"")).replace("\\x0a", "\\012")
    assert _squeezed(name) in _squeezed(inspect)
    assert _squeezed(_escaped(ALL)[:200]) in _squeezed(inspect)


# ----- 5. untrusted text, every byte ----------------------------------------------------------

def test_every_byte_is_printed_inert_in_tables(byte_holder: dict[str, Any]) -> None:
    pid = str(byte_holder["pid"])
    ps = _uffdctl("ps")
    inspect = _uffdctl("inspect", pid)
    child = _uffdctl("inspect", str(byte_holder["children"][0]))
    for res in (ps, inspect, child):
        assert res.returncode == 0, res.stderr
        _assert_inert(res.stdout)
    _check_tables(ps.stdout.decode(), inspect.stdout.decode())
    assert f"pid {byte_holder['children'][0]} {_escaped(_comm_chunks()[0])}" in \
        child.stdout.decode()


def test_every_byte_is_printed_inert_on_a_terminal(byte_holder: dict[str, Any]) -> None:
    pid = str(byte_holder["pid"])
    env = _env(COLUMNS="250", TERM="xterm-256color")
    commands = {"ps": ["ps"], "inspect": ["inspect", pid],
                "watch": ["inspect", "--watch", "--count", "2", "-n", "0.1", pid]}
    plain = {}
    for name, args in commands.items():
        status, out = _pty(args, env)
        assert status == 0, out
        assert b"\x1b[" in out  # a terminal indeed: rich styled it
        text = _assert_inert(out, terminal=True)
        plain[name] = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    _check_tables(plain["ps"], plain["inspect"])
    assert _squeezed(_escaped(ALL)[:200]) in _squeezed(plain["watch"])


def _json_text(data: bytes) -> str:
    """The documented JSON form of bytes read from /proc: U+FFFD for each byte that is not
    valid UTF-8 (here every byte >= 0x80: they never form a valid sequence in this order)."""
    return "".join(chr(b) if b < 0x80 else "\ufffd" for b in data)


def test_every_byte_has_one_representation_in_json(byte_holder: dict[str, Any]) -> None:
    res = _uffdctl("inspect", "--json", str(byte_holder["pid"]))
    assert res.returncode == 0, res.stderr
    res.stdout.decode("ascii")  # ASCII only: any locale carries it
    doc = json.loads(res.stdout)
    json.dumps(doc, ensure_ascii=False).encode("utf-8")  # strict: no lone surrogate
    assert doc["cmdline"][2] == _json_text(ALL)
    (region,) = [r for r in doc["regions"] if r["start"] == byte_holder["start"]]
    assert region["path"].rsplit("/", 1)[1].replace("\\012", "\n") == \
        _json_text(ALL.replace(b"/", b""))
    ps = _uffdctl("ps", "--json")
    ps.stdout.decode("ascii")
    comms = {p["pid"]: p["comm"] for p in json.loads(ps.stdout)["processes"]}
    for pid, chunk in zip(byte_holder["children"], _comm_chunks(), strict=True):
        assert comms[pid] == _json_text(chunk)


# ----- 4. locales ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def latin1_locale(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """en_US.ISO-8859-1, compiled from Debian's `locales` sources into a directory of the
    test's own (LOCPATH): nothing is installed on the system."""
    if "en_US.iso88591" in subprocess.run(["locale", "-a"], capture_output=True,
                                          text=True).stdout.split():
        return {"LC_ALL": "en_US.ISO-8859-1"}
    sources = Path("/usr/share/i18n/locales/en_US")
    if shutil.which("localedef") is None or not sources.exists():
        pytest.skip("no ISO-8859-1 locale and no localedef with /usr/share/i18n (Debian: "
                    "apt-get install locales)")
    where = tmp_path_factory.mktemp("locale")
    res = subprocess.run(["localedef", "-i", "en_US", "-f", "ISO-8859-1",
                          str(where / "en_US.ISO-8859-1")], capture_output=True, text=True)
    if res.returncode not in (0, 1) or not (where / "en_US.ISO-8859-1").exists():
        pytest.skip(f"localedef failed: {res.stderr}")
    return {"LOCPATH": str(where), "LC_ALL": "en_US.ISO-8859-1"}


def _locale_envs(latin1: dict[str, str]) -> dict[str, dict[str, str]]:
    return {"C": _env(LANG="C", LC_ALL="C"),  # Python's UTF-8 mode
            "C, no UTF-8 mode": _env(LANG="C", LC_ALL="C", PYTHONUTF8="0"),  # ASCII
            "ISO-8859-1": _env(**latin1)}


def test_non_utf8_locales_keep_statuses_and_print_inert(byte_holder: dict[str, Any],
                                                        latin1_locale: dict[str, str]) -> None:
    check = subprocess.run([sys.executable, "-c", "import sys; print(sys.stdout.encoding)"],
                           capture_output=True, text=True, env=_env(**latin1_locale))
    assert check.stdout.strip().lower().replace("-", "") in ("iso88591", "latin1"), check
    pid = str(byte_holder["pid"])
    commands = [["ps"], ["inspect", "--all", pid], ["inspect", "--json", pid],
                ["probe", "--no-ioctl-check"], ["demo", "missing", "--pages", "2"]]
    normal = {tuple(c): _uffdctl(*c).returncode for c in commands}
    for name, env in _locale_envs(latin1_locale).items():
        for cmd in commands:
            res = _uffdctl(*cmd, env=env)
            _no_traceback(res)
            assert res.returncode == normal[tuple(cmd)], (name, cmd, res.stderr)
            if name == "C, no UTF-8 mode":
                res.stdout.decode("ascii")
            if name == "ISO-8859-1":
                text = res.stdout.decode("latin-1")
                bad = [c for c in text if (ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0]
                assert not bad, (cmd, bad[:10])
            else:
                _assert_inert(res.stdout)
            if cmd == ["ps"]:
                for chunk in _comm_chunks():
                    assert _escaped(chunk) in res.stdout.decode("latin-1"), (name, chunk)


def test_a_name_the_locale_cannot_show_is_escaped(latin1_locale: dict[str, str]) -> None:
    """Valid UTF-8 beyond the locale's charset (a box-drawing character in ISO-8859-1, an
    e-acute in ASCII) is written as a backslash escape instead of failing."""
    code = ("import ctypes, sys; ctypes.CDLL(None).prctl(15, 'n\u00e9\u2500'.encode(), 0, 0, 0);"
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
    try:
        time.sleep(0.3)
        for name, env in _locale_envs(latin1_locale).items():
            res = _uffdctl("inspect", str(proc.pid), env=env)
            _no_traceback(res)
            assert res.returncode == 0, (name, res.stderr)
            first = res.stdout.decode("latin-1").splitlines()[0]
            expected = {"C": "n\u00e9\u2500".encode().decode("latin-1"),
                        "C, no UTF-8 mode": "n\\xe9\\u2500",
                        "ISO-8859-1": "n\u00e9\\u2500"}[name]
            assert first == f"pid {proc.pid} {expected}  state S", (name, first)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)


# ----- 4. terminals -----------------------------------------------------------------------------

TERMINALS = {"TERM=dumb": {"TERM": "dumb"}, "COLUMNS=0": {"COLUMNS": "0"},
             "COLUMNS=1": {"COLUMNS": "1"}, "COLUMNS=10**20": {"COLUMNS": "1" + "0" * 20},
             "LINES=0": {"LINES": "0", "COLUMNS": "80"}}


@pytest.mark.parametrize("terminal", TERMINALS, ids=list(TERMINALS))
def test_odd_terminals_keep_statuses(terminal: str, byte_holder: dict[str, Any]) -> None:
    pid = str(byte_holder["pid"])
    env = _env(**{"TERM": "xterm-256color", **TERMINALS[terminal]})
    for args in (["ps"], ["inspect", pid], ["inspect", "--watch", "--count", "2", "-n", "0.1",
                                            pid], ["demo", "missing", "--pages", "100"]):
        status, out = _pty(args, env)
        assert status == 0, (args, out[-2000:])
        assert b"Traceback" not in out and b"internal error" not in out, out[-2000:]
        text = _RICH_CSI.sub(b"", out).decode("utf-8")
        if args == ["ps"]:
            assert "pid" in text and "command" in text  # COLUMNS=0 used to print nothing
        if terminal != "COLUMNS=10**20":
            assert max(len(line) for line in text.splitlines()) <= 1000


# ----- 6. numbers ---------------------------------------------------------------------------------

NUMBERS = [
    ("demo", "missing", "--timeout", "nan"), ("demo", "missing", "--timeout", "NaN"),
    ("demo", "minor", "--timeout", "inf"), ("demo", "wp", "--timeout", "-inf"),
    ("demo", "missing", "--timeout", "1e999"), ("demo", "missing", "--timeout", "0"),
    ("demo", "missing", "--timeout", "3601"), ("demo", "missing", "--pages", "0"),
    ("demo", "missing", "--pages", "nan"), ("demo", "missing", "--pages", str(1 << 21)),
    ("demo", "missing", "--threads", "257"), ("demo", "wp", "--written", "-1"),
    ("demo", "wp", "--seed", "1e3"), ("inspect", "--interval", "nan", "1"),
    ("inspect", "--interval", "inf", "1"), ("inspect", "-n", "-1", "1"),
    ("inspect", "--count", "0", "1"), ("inspect", "nan"), ("inspect", "0"),
    ("inspect", "--", "-1"), ("inspect", "1" + "0" * 5000),
    ("probe", "--nfd-expiry", "59"), ("probe", "--nfd-expiry", "1" + "0" * 20),
    ("probe", "--nfd-expiry", "nan"),
]


def test_numeric_options_refuse_nonfinite_and_out_of_range() -> None:
    for args in NUMBERS:
        res = _uffdctl(*args, timeout=30)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        err = res.stderr.decode()
        assert "Traceback" not in err and err.strip(), args


def test_nan_timeout_no_longer_hangs_a_stalled_demo() -> None:
    start = time.monotonic()
    res = _uffdctl("demo", "missing", "--pages", "1", "--stall", "--timeout", "nan", timeout=30)
    assert res.returncode == 2 and time.monotonic() - start < 30
    assert b"'nan' is not a finite number" in res.stderr


# ----- 7. a newer kernel --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def doc_with_unknown_bits() -> dict[str, Any]:
    """The real probe's document plus two bits this uffdctl does not know, one spelled as
    uffdctl 0.1 spelled it ("bit 20") and one as now ("bit_21")."""
    doc = documents.probe_json(probe.run_probe(check_ioctls=False))
    extra = [{"name": "bit 20", "bit": 20, "first": "?", "offered": True, "usable": True,
              "errno": None, "meaning": "not known to this uffdctl"},
             {"name": "bit_21", "bit": 21, "first": "?", "offered": True, "usable": False,
              "errno": "EINVAL", "meaning": "not known to this uffdctl"}]
    doc["api"]["features"] = doc["api"]["features"] + extra
    return doc


def test_unknown_bits_have_valid_names_in_every_format(
        doc_with_unknown_bits: dict[str, Any]) -> None:
    doc = doc_with_unknown_bits
    github = dict(line.split("=", 1) for line in formats.github(doc).splitlines())
    assert all(re.fullmatch(r"[a-z0-9_]+", k) for k in github), github
    assert github["feature_bit_20"] == "true" and github["feature_bit_21"] == "false"
    env_text = formats.env(doc)
    assert all(re.fullmatch(r"UFFD_[A-Z0-9_]+=(0|1|'[^']*'|[A-Za-z0-9._-]+)", line)
               for line in env_text.splitlines())
    shell = subprocess.run(
        ["bash", "-c", env_text + 'echo "$UFFD_FEATURE_BIT_20 $UFFD_FEATURE_BIT_21"'],
        capture_output=True, text=True, check=True)
    assert shell.stdout.split() == ["1", "0"]
    labels = dict(line.split("=", 1) for line in formats.nfd(doc).splitlines()
                  if not line.startswith("#"))
    name_re = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
    prefix = formats.NFD_PREFIX + "/"
    assert all(k.startswith(prefix) and re.fullmatch(name_re, k[len(prefix):]) for k in labels)
    assert labels[prefix + "feature-bit-20"] == "true"
    assert labels[prefix + "feature-bit-21"] == "false"
    facts = json.loads(formats.ansible_facts(doc))
    assert facts["feature_bit_20"] is True and facts["feature_bit_21"] is False
    assert all(re.fullmatch(r"[a-z0-9_]+", k) for k in facts)


def test_unknown_bits_are_named_one_way_and_can_be_required() -> None:
    assert abi.feature_names(1 << 20) == ["bit_20"]
    for spelling in ("bit_20", "bit 20", "BIT-20", "UFFD_FEATURE_BIT_20"):
        assert abi.normalize_feature(spelling) == "bit_20"
        assert require.parse_requirement(spelling).key == "bit_20"
    assert abi.normalize_feature("bit_9") == "minor_hugetlbfs"
    assert abi.normalize_feature("bit_64") is None
    with pytest.raises(require.RequirementError):
        require.parse_requirement("bit_64")


def test_an_unknown_bit_in_require_is_checked_not_refused() -> None:
    res = _uffdctl("probe", "-q", "--no-ioctl-check", "--require", "bit_63")
    _no_traceback(res)
    assert res.returncode == 1, res.stderr  # no kernel offers bit 63 yet
    assert res.stderr.decode().strip() == (
        f"uffdctl: requirement bit_63 not met: not offered by kernel {os.uname().release} "
        "(a bit this uffdctl does not know)")
    js = _uffdctl("probe", "--json", "--no-ioctl-check", "-r", "bit 63")
    (req,) = json.loads(js.stdout)["requirements"]
    assert req["key"] == "bit_63" and req["met"] is False
