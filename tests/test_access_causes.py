"""Every cause that refuses a userfaultfd, named with the fix that works from where the process
stands, and the verdict first (issue 12, items 2 and 5).

Each situation is a real process: a child under a real seccomp filter (tests/seccomp.py), as
uid 65534 with no capabilities (setpriv), with vm.unprivileged_userfaultfd set for real, and
its own /dev/userfaultfd in a private mount namespace (`unshare -m`, a tmpfs, mknod, and a
bind mount over the node), so the host's node is never changed.  The child runs the same
access.diagnose() the probe runs and prints what it found; the assertions are on what the
kernel answered there.  Only the gVisor case is plain data: no process here can meet a
kernel that lacks the syscall without a seccomp filter.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import seccomp
from conftest import IS_ROOT, NOBODY, ROOT
from demo_util import knows_user_mode_only

from uffdctl import access

pytestmark = pytest.mark.skipif(
    not IS_ROOT or any(shutil.which(t) is None for t in ("setpriv", "unshare", "mount")),
    reason="changing credentials and mount namespaces needs root, setpriv and unshare")

# The child: access.diagnose() and its verdict as JSON, denials by what denies.
DIAGNOSE = """
import json
from uffdctl import access
r = access.diagnose()
v = r.verdict
print(json.dumps({
    "methods": {m.name: {"ok": m.ok, "errno": m.errno, "cause": m.cause, "fix": m.fix,
                         "by": [d.by for d in m.denials]} for m in r.methods},
    "verdict": {"kernel_faults": v.kernel_faults, "method": v.method, "text": v.text,
                "cause": v.cause, "fix": v.fix},
    "dev": {"kind": r.context.dev.kind, "rdev": r.context.dev.rdev},
}))
"""


def _misc_dev() -> str | None:
    """The userfaultfd device's numbers as this kernel registered them (6.1+)."""
    try:
        return Path(access.SYSFS_USERFAULTFD).read_text().strip()
    except OSError:
        return None


def _node_script(node: dict[str, Any] | None) -> str:
    """Shell run as root in the private mount namespace before the command: a tmpfs holding
    the node ``node`` describes ({kind: char|file, rdev, mode, owner, acl, nodev}), put at
    /dev/userfaultfd by a bind mount (or, on a kernel with no node to cover, a /dev of our
    own with the few nodes a process needs)."""
    if node is None:
        return 'exec "$@"'
    d = shlex.quote(node["dir"])
    path = f"{d}/userfaultfd"
    lines = ["set -e",
             f"mount -t tmpfs -o mode=0755{',nodev' if node.get('nodev') else ''} "
             f"uffdctl-test {d}"]
    if node["kind"] == "char":
        major, minor = node["rdev"].split(":")
        lines.append(f"mknod {path} c {major} {minor}")
    else:
        lines.append(f"touch {path}")
    lines += [f"chown {node.get('owner', '0:0')} {path}", f"chmod {node['mode']} {path}"]
    if node.get("acl"):
        raw = (b"\x02\x00\x00\x00" + b"".join(
            t.to_bytes(2, "little") + p.to_bytes(2, "little") + i.to_bytes(4, "little")
            for t, p, i in node["acl"])).hex()
        lines.append(f"{shlex.quote(sys.executable)} -c 'import os; os.setxattr("
                     f"\"{node['dir']}/userfaultfd\", \"system.posix_acl_access\", "
                     f"bytes.fromhex(\"{raw}\"))'")
    lines += [
        "if [ -e /dev/userfaultfd ]; then",
        f"  mount --bind {path} /dev/userfaultfd",
        "else",
        f"  mkdir {d}/dev && cp -a /dev/null /dev/zero /dev/full /dev/random /dev/urandom "
        f"{d}/dev/ && mv {path} {d}/dev/ && mount --bind {d}/dev /dev",
        "fi",
        'exec "$@"']
    return "\n".join(lines)


def _run(cmd: list[str], *, node: dict[str, Any] | None = None, deny: str | None = None,
         deny_calls: tuple[str, ...] = ("userfaultfd",), nobody: tuple[str, dict[str, str]]
         | None = None) -> subprocess.CompletedProcess[str]:
    """``cmd`` (after the interpreter) in a private mount namespace holding ``node``, under a
    seccomp filter answering ``deny`` for ``deny_calls``, as nobody when ``nobody`` is the
    nobody_python fixture."""
    if nobody is not None:
        python, env = nobody
        inner = [*NOBODY, python, *cmd]
    else:
        python, env = sys.executable, {**os.environ, "NO_COLOR": "1"}
        inner = [python, *cmd]
    if deny is not None:
        inner = seccomp.command(deny, inner, deny_calls)
    full = ["unshare", "-m", "sh", "-c", _node_script(node), "sh", *inner]
    return subprocess.run(full, capture_output=True, text=True, env=env, timeout=120,
                          cwd="/" if nobody else ROOT)


def _diagnose(**kw: Any) -> dict[str, Any]:
    res = _run(["-c", DIAGNOSE], **kw)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def _first_access_line(stdout: str) -> str:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Access ("))
    return lines[start + 1].strip()


# ----- several things deny the same call -------------------------------------------------------

@pytest.mark.kernel
def test_seccomp_and_sysctl_both_named_no_blocked_fix(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    """The KubeVirt case (kubevirt issue 17780: "Postcopy is not supported: Userfaultfd not
    available: Operation not permitted"): a seccomp filter answering EPERM and the sysctl at
    0, as an unprivileged user.  Both are named; UFFD_USER_MODE_ONLY, which the filter blocks
    too, is never the fix."""
    sysctl("vm/unprivileged_userfaultfd", "0")
    doc = _diagnose(deny="EPERM", nobody=nobody_python)
    syscall, dev, umo = (doc["methods"][n] for n in (access.SYSCALL, access.DEV,
                                                      access.USER_MODE_ONLY))
    verdict = doc["verdict"]
    assert syscall["errno"] == "EPERM" and umo["errno"] == "EPERM"
    if knows_user_mode_only():
        # From 5.11 the kernel never refuses UFFD_USER_MODE_ONLY: the filter is certain, and
        # the sysctl would refuse the full-power call once the filter lets it through.
        assert syscall["by"] == ["seccomp", "sysctl"], syscall
        assert umo["by"] == ["seccomp"], umo
        assert "seccomp profile" in syscall["fix"] and "vm.unprivileged_userfaultfd=1" in \
            syscall["fix"] and "and also" in syscall["fix"]
    else:
        # 5.10 checks permission before flags: the errno cannot tell whether the filter
        # answered too, so it is named as possible, with its fix as a condition.
        assert syscall["by"] == ["sysctl", "seccomp-maybe"], syscall
        assert umo["by"] == ["old-kernel", "sysctl", "seccomp-maybe"], umo
        assert "where the filter denies it too, allow the userfaultfd syscall" in syscall["fix"]
    assert not verdict["kernel_faults"] and verdict["method"] is None
    assert "seccomp filter" in verdict["cause"] and "unprivileged_userfaultfd is 0" in \
        verdict["cause"]
    for text in (verdict["fix"], syscall["fix"], dev["fix"], umo["fix"]):
        assert "UFFD_USER_MODE_ONLY" not in text, text
    if _misc_dev() is None:  # 5.10: no device, and nothing to do about it there
        assert dev["by"] == ["no-device"] and dev["fix"] == ""
        assert "/dev/userfaultfd" not in verdict["fix"]
    else:  # the host's node, 0600 root: a real way, which the filter does not cover
        assert dev["errno"] == "EACCES" and dev["by"] == ["node-mode"], dev
        assert "the permissions of others, ---" in dev["cause"]
        assert "for /dev/userfaultfd: as root: `chgrp nogroup /dev/userfaultfd && chmod g+rw" \
            in verdict["fix"]
    # The table says it first.
    python, env = nobody_python
    res = subprocess.run(seccomp.command("EPERM", [*NOBODY, python, "-m", "uffdctl", "probe",
                                                   "--no-ioctl-check"]),
                         capture_output=True, text=True, env=env, timeout=120, cwd="/")
    assert res.returncode == 3, res.stderr
    first = _first_access_line(res.stdout)
    assert first.startswith("FAIL  kernel-mode faults: no, user-mode faults: no (a seccomp "
                            "filter" if knows_user_mode_only() else
                            "FAIL  kernel-mode faults: no, user-mode faults: no "
                            "(vm.unprivileged_userfaultfd is 0"), first


def test_enosys_filter_names_only_the_filter_when_the_sysctl_allows(  # type: ignore[no-untyped-def]
        nobody_python, sysctl) -> None:
    """A filter answering ENOSYS with the sysctl at 1: the filter is the only cause, and the
    sysctl is not named (it lets this process through)."""
    sysctl("vm/unprivileged_userfaultfd", "1")
    doc = _diagnose(deny="ENOSYS", nobody=nobody_python)
    for name in (access.SYSCALL, access.USER_MODE_ONLY):
        m = doc["methods"][name]
        assert m["errno"] == "ENOSYS" and m["by"] == ["seccomp"], m
        assert "sysctl" not in m["cause"] + m["fix"]
    fix = doc["verdict"]["fix"]
    assert "vm.unprivileged_userfaultfd=1" not in fix and "seccomp profile" in fix


def test_enosys_filter_over_sysctl_0_names_both(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    """ENOSYS from the filter hides the sysctl's refusal behind it: the full-power call needs
    both changed, the user-mode-only call only the filter (from 5.11)."""
    sysctl("vm/unprivileged_userfaultfd", "0")
    doc = _diagnose(deny="ENOSYS", nobody=nobody_python)
    assert doc["methods"][access.SYSCALL]["by"] == ["seccomp", "sysctl"]
    if knows_user_mode_only():
        assert doc["methods"][access.USER_MODE_ONLY]["by"] == ["seccomp"]


def test_filter_denying_the_device_ioctl(nobody_python, sysctl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The syscall allowed by the filter, ioctl USERFAULTFD_IOC_NEW on /dev/userfaultfd not:
    the node (0666 here) opens, the ioctl is refused; the sysctl refuses the syscall; the
    user-mode-only call works.  The fix for kernel-mode faults names the ioctl and the
    sysctl, never the node's mode (which is fine)."""
    rdev = _misc_dev()
    if rdev is None:
        pytest.skip("no /dev/userfaultfd before 6.1")
    sysctl("vm/unprivileged_userfaultfd", "0")
    node = {"dir": str(tmp_path), "kind": "char", "rdev": rdev, "mode": "0666"}
    doc = _diagnose(node=node, deny="EPERM", deny_calls=("ioc_new",), nobody=nobody_python)
    syscall, dev, umo = (doc["methods"][n] for n in (access.SYSCALL, access.DEV,
                                                      access.USER_MODE_ONLY))
    assert syscall["by"] == ["sysctl"] and "seccomp" not in syscall["cause"], syscall
    assert dev["errno"] == "EPERM" and dev["by"] == ["seccomp-ioctl"], dev
    assert "0xaa00" in dev["cause"] and "opening the node worked" in dev["cause"]
    assert umo["ok"] is True
    verdict = doc["verdict"]
    assert (verdict["kernel_faults"], verdict["method"]) == (False, access.USER_MODE_ONLY)
    assert "0xaa00" in verdict["fix"] and "vm.unprivileged_userfaultfd=1" in verdict["fix"]
    assert "chmod" not in verdict["fix"] and "chgrp" not in verdict["fix"]
    res = _run(["-m", "uffdctl", "probe", "--no-ioctl-check"], node=node, deny="EPERM",
               deny_calls=("ioc_new",), nobody=nobody_python)
    first = _first_access_line(res.stdout)
    assert first.startswith("WARN  kernel-mode faults: no (the syscall: "
                            "vm.unprivileged_userfaultfd is 0"), first
    assert "user-mode faults only, via syscall+user-mode-only" in first


# ----- a /dev/userfaultfd that is not the device -----------------------------------------------

@pytest.mark.kernel
@pytest.mark.parametrize("kind,rdev", [("file", ""), ("char", "1:3")])
def test_fake_node_is_named_and_never_opened(tmp_path, kind: str, rdev: str) -> None:
    """A regular file, or /dev/null's numbers, at /dev/userfaultfd: not the device, said
    from stat() alone (it is not opened: an unknown device may act on open), with the
    command that puts the real node there; the syscall still serves."""
    node = {"dir": str(tmp_path), "kind": kind, "rdev": rdev, "mode": "0666"}
    doc = _diagnose(node=node)
    dev = doc["methods"][access.DEV]
    assert dev["ok"] is False and dev["errno"] is None and dev["by"] == ["not-device"], dev
    what = "regular file" if kind == "file" else "char device 1:3"
    assert f"/dev/userfaultfd is a {what}" in dev["cause"], dev
    real = _misc_dev()
    if real is None:  # 5.10: no userfaultfd device at all, so nothing to put there; the
        # way that works is named instead
        assert "has no userfaultfd device (added in 6.1)" in dev["cause"]
        assert dev["fix"] == "use the syscall"
    else:
        major, minor = real.split(":")
        assert f"the userfaultfd device is char {real}" in dev["cause"]
        assert f"`rm /dev/userfaultfd && mknod -m 0600 /dev/userfaultfd c {major} {minor}`" \
            in dev["fix"]
    assert doc["verdict"]["kernel_faults"] and doc["verdict"]["method"] == access.SYSCALL


def test_wrong_misc_device_answers_enotty(tmp_path) -> None:
    """A misc device (major 10) whose numbers sysfs cannot confirm is opened, and one that
    is not userfaultfd answers USERFAULTFD_IOC_NEW with ENOTTY: /dev/fuse's numbers, with
    /sys/class/misc hidden behind a tmpfs in the namespace."""
    try:
        fuse = Path("/sys/class/misc/fuse/dev").read_text().strip()
    except OSError:
        pytest.skip("no /dev/fuse misc device to stand in")
    if _misc_dev() is None:
        pytest.skip("no /dev/userfaultfd to cover before 6.1")
    node = {"dir": str(tmp_path), "kind": "char", "rdev": fuse, "mode": "0600"}
    script = _node_script(node).replace('exec "$@"',
                                        'mount -t tmpfs uffdctl-test /sys/class/misc\nexec "$@"')
    res = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", sys.executable, "-c",
                          DIAGNOSE], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    dev = json.loads(res.stdout)["methods"][access.DEV]
    assert dev["errno"] == "ENOTTY" and dev["by"] == ["not-device"], dev
    assert "does not know USERFAULTFD_IOC_NEW" in dev["cause"]
    assert "MINOR" in dev["fix"]  # the numbers are the host's sysfs' to give


# ----- the node's permissions against this process ----------------------------------------------

# (mode, owner, acl, who applies to nobody, its bits, a phrase of the fix); None: it opens.
NODES = [
    ("0666", "0:0", (), None, "", ""),
    ("0660", "0:65534", (), None, "", ""),
    ("0600", "0:0", (), "others", "---",
     "`chgrp nogroup /dev/userfaultfd && chmod g+rw /dev/userfaultfd`"),
    ("0660", "0:0", (), "others", "---", "`chgrp nogroup /dev/userfaultfd"),
    ("0660", "0:100", (), "others", "---", "`usermod -aG users nobody`"),
    # The owner's bits decide for the owner, however open the others are.
    ("0066", "65534:0", (), "the owner", "---", "`chmod u+rw /dev/userfaultfd`"),
    ("0640", "0:65534", (), "the owning group", "r--", "`chmod g+rw /dev/userfaultfd`"),
    # An ACL: a named entry for nobody, limited by the mask.
    ("0600", "0:0", ((access.ACL_USER_OBJ, 6, 0xFFFFFFFF), (access.ACL_USER, 6, 65534),
                     (access.ACL_GROUP_OBJ, 0, 0xFFFFFFFF), (access.ACL_MASK, 4, 0xFFFFFFFF),
                     (access.ACL_OTHER, 0, 0xFFFFFFFF)),
     "named user u:65534", "r--", "`setfacl -m u:65534:rw,m::rw /dev/userfaultfd`"),
    ("0600", "0:0", ((access.ACL_USER_OBJ, 6, 0xFFFFFFFF), (access.ACL_USER, 6, 65534),
                     (access.ACL_GROUP_OBJ, 0, 0xFFFFFFFF), (access.ACL_MASK, 6, 0xFFFFFFFF),
                     (access.ACL_OTHER, 0, 0xFFFFFFFF)), None, "", ""),
]


@pytest.mark.parametrize("mode,owner,acl,who,bits,fix", NODES,
                         ids=[f"{n[0]}-{n[1]}{'-acl' if n[2] else ''}-{n[3] or 'opens'}"
                              for n in NODES])
def test_node_permissions_for_nobody(nobody_python, sysctl, tmp_path, mode: str, owner: str,  # type: ignore[no-untyped-def]
                                     acl: tuple[tuple[int, int, int], ...], who: str | None,
                                     bits: str, fix: str) -> None:
    """A real node (the kernel's numbers) with this mode, owner and ACL, opened by nobody
    (uid 65534, group 65534) with the sysctl at 0: the kernel's answer, which of the node's
    permission entries applied, and the exact change that lets this process in."""
    rdev = _misc_dev()
    if rdev is None:
        pytest.skip("no /dev/userfaultfd before 6.1")
    sysctl("vm/unprivileged_userfaultfd", "0")
    node = {"dir": str(tmp_path), "kind": "char", "rdev": rdev, "mode": mode,
            "owner": owner, "acl": acl}
    res = _run(["-c", DIAGNOSE], node=node, nobody=nobody_python)
    if acl and res.returncode != 0 and "Operation not supported" in res.stderr:
        pytest.skip("tmpfs without POSIX ACLs (CONFIG_TMPFS_POSIX_ACL)")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    dev, verdict = doc["methods"][access.DEV], doc["verdict"]
    if who is None:
        assert dev["ok"] is True, dev
        assert (verdict["kernel_faults"], verdict["method"]) == (True, access.DEV)
        assert verdict["text"] == ("kernel-mode faults: yes, via /dev/userfaultfd; the syscall "
                                   "is refused because vm.unprivileged_userfaultfd is 0 and "
                                   "this process lacks CAP_SYS_PTRACE")
        return
    assert dev["errno"] == "EACCES" and dev["by"] == ["node-mode"], dev
    assert f"gets the permissions of {who}, {bits}, and opening it needs rw-" in dev["cause"]
    # Only root may change a node it does not own.
    assert fix in dev["fix"] and ("as root: " in dev["fix"]) == (who != "the owner"), dev["fix"]
    assert fix in verdict["fix"]


def test_node_on_a_nodev_mount(nobody_python, sysctl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Mode 0666, but on a filesystem mounted nodev: the open is refused (EACCES,
    may_open_dev() in fs/namei.c) and the mount option is named, not the mode."""
    rdev = _misc_dev()
    if rdev is None:
        pytest.skip("no /dev/userfaultfd before 6.1")
    sysctl("vm/unprivileged_userfaultfd", "0")
    node = {"dir": str(tmp_path), "kind": "char", "rdev": rdev, "mode": "0666", "nodev": True}
    dev = _diagnose(node=node, nobody=nobody_python)["methods"][access.DEV]
    assert dev["errno"] == "EACCES" and dev["by"] == ["nodev"], dev
    assert "chmod" not in dev["fix"] and "nodev" in dev["fix"]


def test_node_0666_verdict_leads_the_table(nobody_python, sysctl, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The probe's access section opens with the verdict: kernel-mode faults through the
    device, and why not through the syscall."""
    rdev = _misc_dev()
    if rdev is None:
        pytest.skip("no /dev/userfaultfd before 6.1")
    sysctl("vm/unprivileged_userfaultfd", "0")
    node = {"dir": str(tmp_path), "kind": "char", "rdev": rdev, "mode": "0666"}
    res = _run(["-m", "uffdctl", "probe", "--no-ioctl-check"], node=node, nobody=nobody_python)
    assert res.returncode == 0, res.stderr
    assert _first_access_line(res.stdout) == (
        "PASS  kernel-mode faults: yes, via /dev/userfaultfd; the syscall is refused because "
        "vm.unprivileged_userfaultfd is 0 and this process lacks CAP_SYS_PTRACE")
    assert "via /dev/userfaultfd)" in res.stdout  # the API was probed through the device


# ----- a sandbox without the syscall: plain data -----------------------------------------------

def _ctx(**kw: Any) -> access.Context:
    base: dict[str, Any] = dict(
        uid=0, euid=0, cap_sys_ptrace=True, initial_userns=True, sysctl=None, seccomp=0,
        seccomp_filters=0, dev=access.DevNode(False), config_userfaultfd=None,
        release="4.4.0", egid=0, gids=(0,))
    return access.Context(**{**base, **kw})


def test_gvisor_enosys_without_a_filter_is_the_sandbox() -> None:
    """gVisor answers every system call in its own kernel, which has no userfaultfd: ENOSYS,
    with no seccomp filter and no /dev/userfaultfd, under a made-up release (4.4.0).  No
    process here can meet that for real (this kernel has the syscall, and the only way to
    make it answer ENOSYS is a filter), so the decision is tested with plain data: the
    sandbox is named, never a seccomp filter, and the fix leaves the sandbox."""
    outcomes = [access.Outcome(access.SYSCALL, False, errno.ENOSYS, "userfaultfd"),
                access.Outcome(access.DEV, False, errno.ENOENT, "open"),
                access.Outcome(access.USER_MODE_ONLY, False, errno.ENOSYS, "userfaultfd")]
    report = access.AccessReport(_ctx(), access.explain_all(_ctx(), outcomes))
    syscall = report.method(access.SYSCALL)
    assert syscall is not None and [d.by for d in syscall.denials] == ["sandbox"]
    assert "gVisor" in syscall.cause and "no seccomp filter installed" in syscall.cause
    assert "seccomp profile" not in syscall.fix
    verdict = report.verdict
    assert not verdict.kernel_faults and verdict.method is None
    assert "runsc" in verdict.fix and "seccomp profile" not in verdict.fix
    assert "denies" not in verdict.cause
    # The same answer where the kernel's configuration says it has userfaultfd: then it can
    # only be the sandbox, and a kernel rebuild is not offered.
    ctx = _ctx(config_userfaultfd="y", release="6.12.0")
    [m] = access.explain_all(ctx, outcomes[:1])
    assert [d.by for d in m.denials] == ["sandbox"] and "CONFIG_USERFAULTFD=y" in m.cause
    assert "runsc" in m.fix and "kernel built with" not in m.fix


def test_device_cgroup_denying_the_node() -> None:
    """A device cgroup that denies the device (a container's device allow-list; cgroup v1's
    devices controller here): the open is refused with EPERM (devcgroup_check_permission(),
    security/device_cgroup.c) although the mode lets root in, and the fix is the container's
    device rule, not the node's mode."""
    rdev = _misc_dev()
    root = Path("/sys/fs/cgroup/devices")
    if rdev is None or not (root / "devices.deny").exists():
        pytest.skip("needs /dev/userfaultfd (6.1) and cgroup v1's devices controller")
    group = root / f"uffdctl-test-{os.getpid()}"
    group.mkdir()
    try:
        (group / "devices.deny").write_text(f"c {rdev} rwm\n")
        script = f'echo $$ > {shlex.quote(str(group / "cgroup.procs"))} && exec "$@"'
        res = subprocess.run(["sh", "-c", script, "sh", sys.executable, "-c", DIAGNOSE],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    finally:
        group.rmdir()
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    dev = doc["methods"][access.DEV]
    assert dev["errno"] == "EPERM" and dev["by"] == ["device-cgroup"], dev
    assert f"c {rdev} rw" in dev["fix"] and "chmod" not in dev["fix"]
    assert doc["verdict"]["method"] == access.SYSCALL
