"""The probe's answer in the formats CI systems and fleets already read.

Every format is built from the probe's JSON document (documents.probe_json), so a value means
the same thing everywhere: a feature is true when this process can use it (offered by the
kernel and accepted on a fresh descriptor), a cell MODE:MEMORY when a real registration
succeeded, an ioctl when some working cell hands it back and it did not fail when tried.

- github: ``name=value`` lines for $GITHUB_OUTPUT (appended, as GitHub expects).
- env: ``UFFD_...=0|1`` lines, safe to ``eval`` (names [A-Z0-9_], values 0/1 or quoted).
- nfd: a Node Feature Discovery local feature file (features.d): prefixed label names, an
  ``# +expiry-time=`` directive, written to a temporary file and renamed into place.
- facts: the JSON an Ansible executable local fact prints (always exit 0).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shlex
import tempfile
from typing import Any

from .. import abi

# NFD accepts feature.node.kubernetes.io and its sub-namespaces without extra configuration.
NFD_PREFIX = "uffd.feature.node.kubernetes.io"
NFD_DEFAULT_EXPIRY_S = 7200
NFD_MAX_BYTES = 64 * 1024  # nfd-worker ignores a larger feature file


def cell_name(mode: str, memory: str) -> str:
    """minor:hugetlb -> minor_hugetlb; missing+wp:shmem-private -> missing_wp_shmem_private."""
    return re.sub(r"[^a-z0-9]+", "_", f"{mode}_{memory}".lower())


def usable_ioctls(doc: dict[str, Any]) -> set[str]:
    found: set[str] = set()
    for c in doc.get("matrix") or []:
        if c.get("ok"):
            found |= set(c.get("ioctls", [])) - set(c.get("failing_ioctls", []))
    return found


def facts(doc: dict[str, Any]) -> dict[str, Any]:
    """Flat booleans by name: the one table every format below is printed from."""
    out: dict[str, Any] = {"userfaultfd": bool((doc.get("access") or {}).get("usable"))}
    for f in (doc.get("api") or {}).get("features") or []:
        out[f["name"]] = bool(f.get("usable"))
    for c in doc.get("matrix") or []:
        out[cell_name(c["mode"], c["memory"])] = bool(c.get("ok"))
    ioctls = usable_ioctls(doc)
    for ioctl in abi.RESOLVING_IOCTLS:
        out[f"ioctl_{ioctl.key}"] = ioctl.key in ioctls
    return out


def _kernel(doc: dict[str, Any]) -> str:
    return str((doc.get("kernel") or {}).get("release", ""))


def github(doc: dict[str, Any]) -> str:
    lines = [f"{k}={'true' if v else 'false'}" for k, v in facts(doc).items()]
    # A value with a newline would need GitHub's heredoc form; a release never has one.
    lines.append("kernel=" + _kernel(doc).replace("\n", " "))
    return "\n".join(lines) + "\n"


def env(doc: dict[str, Any]) -> str:
    lines = []
    for k, v in facts(doc).items():
        name = "UFFD_" + re.sub(r"[^A-Z0-9]", "_", k.upper())
        if k == "userfaultfd":
            name = "UFFD_AVAILABLE"
        lines.append(f"{name}={1 if v else 0}")
    lines.append(f"UFFD_KERNEL={shlex.quote(_kernel(doc))}")
    return "\n".join(lines) + "\n"


def _label_value(text: str) -> str:
    """A Kubernetes label value: <= 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    v = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:63]
    return v.strip("_.-")


def nfd(doc: dict[str, Any], now: _dt.datetime | None = None,
        expiry_s: int = NFD_DEFAULT_EXPIRY_S) -> str:
    now = now or _dt.datetime.now(_dt.timezone.utc)
    expires = (now + _dt.timedelta(seconds=expiry_s)).replace(microsecond=0)
    lines = ["# userfaultfd capabilities of this node, written by `uffdctl probe --format nfd`",
             f"# +expiry-time={expires.strftime('%Y-%m-%dT%H:%M:%SZ')}"]
    for k, v in facts(doc).items():
        lines.append(f"{NFD_PREFIX}/{k.replace('_', '-')}={'true' if v else 'false'}")
    kernel = _label_value(_kernel(doc))
    if kernel:
        lines.append(f"{NFD_PREFIX}/kernel={kernel}")
    return "\n".join(lines) + "\n"


def ansible_facts(doc: dict[str, Any]) -> str:
    out = {"available": bool((doc.get("access") or {}).get("usable")),
           "kernel": _kernel(doc), "schema_version": doc.get("schema_version"),
           "capabilities": facts(doc),
           "features": [f["name"] for f in (doc.get("api") or {}).get("features") or []
                        if f.get("usable")],
           "matrix": {cell_name(c["mode"], c["memory"]): bool(c.get("ok"))
                      for c in doc.get("matrix") or []},
           "ioctls": sorted(usable_ioctls(doc))}
    if "error" in doc:
        out["error"] = doc["error"]
    return json.dumps(out, indent=2, sort_keys=True) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Write to a temporary file in the same directory, then rename it into place: a reader
    (nfd-worker) sees the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".uffdctl-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def append(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)


def render(fmt: str, doc: dict[str, Any], nfd_expiry: int = NFD_DEFAULT_EXPIRY_S) -> str:
    if fmt == "json":
        return json.dumps(doc) + "\n"
    if fmt == "nfd":
        return nfd(doc, expiry_s=nfd_expiry)
    return {"github": github, "env": env, "facts": ansible_facts}[fmt](doc)


def deliver(fmt: str, doc: dict[str, Any], output: str | None,
            nfd_expiry: int = NFD_DEFAULT_EXPIRY_S) -> None:
    """Print the document in ``fmt``, or write it to ``output``: appended for github (the
    default target there is $GITHUB_OUTPUT, as Actions expects), atomically otherwise."""
    import sys

    from .. import errors

    text = render(fmt, doc, nfd_expiry)
    target = output or (os.environ.get("GITHUB_OUTPUT") or None if fmt == "github" else None)
    if target is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        (append if fmt == "github" else write_atomically)(target, text)
    except OSError as exc:
        raise errors.UffdctlError(f"cannot write {target}: {exc.strerror or exc}",
                                  "check that the directory exists and is writable",
                                  errors.FAILED) from None
