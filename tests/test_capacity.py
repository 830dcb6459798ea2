"""Capability apart from capacity, in every format, for real.

Capability (features, cells, ioctls, the access method, the kernel) is what the kernel and the
caller can do: a node label, a CI gate.  Capacity (free huge pages per size now, whether a
demo could run on hugetlb now) changes with load.  Here the huge page pool is filled, emptied
by another process that maps and touches every free page, and given back, and no capability
key and no NFD label may change while the capacity keys do.  Every documented key must be in
every run: as nobody with vm.unprivileged_userfaultfd=0 (only a user-mode-only descriptor, or
nothing at all on 5.10) with a ``reason``, and when the probe cannot even run.

The tests marked ``kernel`` run in each kernel of tools/kernel-matrix: what they expect comes
from the running kernel (its pools, its cells), never from one release's values.

Tests named ``test_exit_rule_*`` check the flat formats' exit status rule of uffdctl-probe(1)
(EXIT STATUS): github, env, nfd and facts exit 0 whether or not a userfaultfd opens, and 1 with
an unmet --require, after writing every key.  The half where nothing opens needs the cli.py
change of issue 14 (until it is applied those runs exit 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import seccomp
from conftest import NOBODY, ROOT
from demo_util import knows_user_mode_only

from uffdctl import abi, demoneeds, memtypes, probe, scenarios
from uffdctl import hugepages as hp
from uffdctl.render import documents, formats

Run = Callable[..., subprocess.CompletedProcess[str]]
FLAT = ("github", "env", "nfd", "facts")
EXPIRY = "# +expiry-time="


def _kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def _sizes() -> list[str]:
    """The huge page sizes this kernel has pools for, as the keys name them (2m, 1g)."""
    return [documents.size_name(p.size_kb) for p in hp.read_pools().pools]


def documented_keys(sizes: list[str] | None = None) -> list[str]:
    """Every key uffdctl-probe(1) promises in every run of this machine."""
    return formats.capability_keys() + formats.capacity_keys(_sizes() if sizes is None
                                                             else sizes)


def _parse(fmt: str, text: str) -> dict[str, Any]:
    """A flat format's output as key -> value, named as in facts (env: UFFD_ and upper case
    off, UFFD_AVAILABLE back to userfaultfd; nfd: the prefix off, "-" back to "_")."""
    if fmt == "facts":
        return dict(json.loads(text))
    if fmt == "env":
        return {"userfaultfd" if name == "UFFD_AVAILABLE" else
                name.removeprefix("UFFD_").lower(): value
                for name, value in _kv(text).items()}
    if fmt == "nfd":
        prefix = formats.NFD_PREFIX + "/"
        return {k.removeprefix(prefix).replace("-", "_"): v for k, v in _kv(text).items()}
    return _kv(text)


def _outputs(text: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {fmt: _parse(fmt, t) for fmt, t in text.items()}


def _render_all(doc: dict[str, Any]) -> dict[str, str]:
    return {fmt: formats.render(fmt, doc) for fmt in FLAT}


def _capability_only(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if not k.startswith("capacity_")}


def _labels(nfd_text: str) -> list[str]:
    """The NFD file as nfd-worker reads it, less the expiry (a time, not a label)."""
    return [line for line in nfd_text.splitlines() if not line.startswith(EXPIRY)]


# ----- the key lists ------------------------------------------------------------------------

def test_no_key_collides_in_any_format() -> None:
    sizes = sorted({*_sizes(), "64k", "2m", "32m", "512m", "1g", "16g"})
    keys = documented_keys(sizes) + ["feature_bit_20", "feature_bit_63"]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    # Each key in exactly one namespace: no feature is also a cell (minor_shmem was both).
    spaces = ("feature_", "cell_", "ioctl_", "capacity_")
    for key in keys:
        owners = [p for p in spaces if key.startswith(p)]
        assert len(owners) == (key not in formats.BASE_KEYS), key
    # The names that used to be one key (a feature and a cell) are two.
    assert {"feature_minor_shmem", "cell_minor_shmem", "feature_missing_shmem",
            "cell_missing_shmem", "feature_minor_hugetlbfs", "cell_minor_hugetlb"} <= set(keys)
    # The names each format writes are unique too, and valid there.
    env = [formats.env_name(k) for k in keys]
    assert len(env) == len(set(env)) and "UFFD_AVAILABLE" in env and "UFFD_USERFAULTFD" not in env
    labels = [formats.label_name(k) for k in formats.capability_keys()]
    assert len(labels) == len(set(labels))
    assert all(len(label) <= 63 for label in labels), max(labels, key=len)
    # The documented lists: every feature, cell and resolving ioctl uffdctl knows.
    assert {f"feature_{f.key}" for f in abi.FEATURES} <= set(keys)
    assert {f"cell_{formats.cell_name(m, mt.name)}" for m in abi.MATRIX_MODES
            for mt in memtypes.MEMORY_TYPES} <= set(keys)
    assert {f"ioctl_{i.key}" for i in abi.RESOLVING_IOCTLS} <= set(keys)
    assert "cell_minor_hugetlb" in keys and "cell_missing_wp_shmem_private" in keys
    # The demos the capacity keys speak of are the demos there are.
    assert tuple(scenarios.SCENARIOS) == formats.DEMOS


def test_man_page_lists_every_key() -> None:
    """uffdctl-probe(1) names every key the flat formats write (recipes are written against
    that list), and the exit status rule per format."""
    page = (ROOT / "man" / "uffdctl-probe.1").read_text()
    fmt = page.split('.BR \\-f ", " \\-\\-format', 1)[1].split("\n.TP\n.BR \\-o", 1)[0]
    words = {w.rstrip(".:") for w in fmt.replace(",", " ").replace(";", " ").replace("(", " ")
             .replace(")", " ").split()}
    for key in formats.BASE_KEYS:
        assert key in words, key
    assert {f"feature_{f.key}" for f in abi.FEATURES} <= words
    assert {f"ioctl_{i.key}" for i in abi.RESOLVING_IOCTLS} <= words
    assert {formats.cell_name(m, "x")[:-2] for m in abi.MATRIX_MODES} <= words
    assert {formats.fact_name(mt.name) for mt in memtypes.MEMORY_TYPES} <= words
    for pattern in ("feature_bit_N", "cell_MODE_MEMORY", "capacity_hugepages_free_SIZE",
                    "capacity_hugepages_total_SIZE", "capacity_demo_MODE_hugetlb"):
        assert pattern in words, pattern
    assert all(d in fmt for d in formats.DEMOS)
    status = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    assert "exit 0 whether or not a userfaultfd opens" in status
    assert "exit 1 when a requirement is unmet, after writing every key" in status


def test_an_unknown_offered_bit_is_a_feature_key_in_every_format() -> None:
    """A bit a newer kernel offers and this uffdctl does not know: feature_bit_N, beside
    every documented key, in its own namespace."""
    doc = documents.probe_json(probe.run_probe(check_ioctls=False))
    doc["api"]["features"] = doc["api"]["features"] + [
        {"name": "bit 20", "bit": 20, "first": "?", "offered": True, "usable": True,
         "errno": None, "meaning": "not known to this uffdctl"}]
    out = _outputs(_render_all(doc))
    for fmt, values in out.items():
        assert values["feature_bit_20"] in ("true", "1", True), fmt
        assert "bit_20" not in values, fmt
    keys = list(formats.capability(doc))  # after the features uffdctl knows
    assert keys.index("feature_bit_20") == len(formats.BASE_KEYS) + len(abi.FEATURES)


def test_every_key_when_the_probe_cannot_run() -> None:
    """facts when the probe itself fails (a --pid that went away): the error document still
    gives every capability key (false) and every demo key, with the error as the reason."""
    from uffdctl import errors

    doc = documents.probe_error_json(errors.UffdctlError("no process 424242", "check the pid",
                                                         errors.NO_PROCESS))
    facts = json.loads(formats.ansible_facts(doc))
    assert set(formats.capacity_keys([])) | set(formats.capability_keys()) <= set(facts)
    assert facts["reason"].startswith("no process 424242") and facts["available"] is False
    assert facts["method"] == "none" and not any(
        v for k, v in facts.items() if k.startswith(("feature_", "cell_", "ioctl_", "capacity_")))


# ----- capacity flips, capability stays -------------------------------------------------------

_TAKER = """
import os, sys
from uffdctl import uffd
size, pages = int(sys.argv[1]), int(sys.argv[2])
fd = uffd.memfd_create("uffdctl-test-taker", huge_page_size=size)
uffd.ftruncate(fd, size * pages)
addr = uffd.mmap(size * pages, uffd.PROT_READ | uffd.PROT_WRITE, uffd.MAP_SHARED, fd)
for i in range(pages):
    uffd.touch_write(addr + i * size, 1)  # faulted in: the pages are this process's now
print("ready", flush=True)
sys.stdin.read()
"""


@contextmanager
def taken_by_another_process(size: int, pages: int) -> Iterator[None]:
    """Another process maps and touches ``pages`` huge pages of ``size`` bytes for the block,
    then exits (its pages go back to the pool)."""
    proc = subprocess.Popen([sys.executable, "-c", _TAKER, str(size), str(pages)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
        yield
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(30)


def _snapshot() -> tuple[dict[str, Any], dict[str, str]]:
    doc = documents.probe_json(probe.run_probe(check_ioctls=True))
    return doc, _render_all(doc)


@pytest.mark.kernel
def test_capacity_changes_and_capability_does_not(hugepages) -> None:  # type: ignore[no-untyped-def]
    pool = hugepages_pool()
    need = 2 * scenarios.DemoConfig().pages  # what each demo maps as is
    assert scenarios.DemoConfig().pages == demoneeds.DEFAULT_PAGES
    size = documents.size_name(pool.size_kb)
    with hugepages(need):
        first = _snapshot()
        free = hp.read_pools().pool().available  # type: ignore[union-attr]
        with taken_by_another_process(pool.size, free):
            taken = _snapshot()
        back = _snapshot()
    runs = {"reserved": first, "taken": taken, "given back": back}
    outputs = {name: _outputs(text) for name, (_, text) in runs.items()}
    # The pool as each run saw it, from the JSON document and from every flat format.
    for name, (doc, _) in runs.items():
        (entry,) = [p for p in doc["capacity"]["hugepages"] if p["size"] == size]
        want = 0 if name == "taken" else entry["free"]
        assert entry["free"] == want and (name == "taken" or want >= need), (name, entry)
        for fmt in FLAT:
            got = outputs[name][fmt]
            if fmt == "nfd":  # never a label
                assert not any(k.startswith("capacity_") for k in got), got
                continue
            assert str(got[f"capacity_hugepages_free_{size}"]) == str(want), (name, fmt)
    # What the pools hold changed; nothing the kernel and this caller can do did.
    first_facts, taken_facts, back_facts = (outputs[n]["facts"] for n in runs)
    assert first_facts[f"capacity_hugepages_free_{size}"] >= need
    assert taken_facts[f"capacity_hugepages_free_{size}"] == 0
    for mode in formats.DEMOS:
        key = f"capacity_demo_{mode}_hugetlb"
        # Where the mode registers on hugetlb (a capability), the demo can run with the
        # pages free, and cannot while another process holds them.
        assert first_facts[key] is back_facts[key] is first_facts[f"cell_{mode}_hugetlb"], key
        assert taken_facts[key] is False, key
    for fmt in FLAT:
        values = [_capability_only(outputs[n][fmt]) for n in runs]
        assert values[0] == values[1] == values[2], fmt
    labels = [_labels(text["nfd"]) for _, text in runs.values()]
    assert labels[0] == labels[1] == labels[2]
    # The hugetlb cells held throughout: registered with no page, whatever the pool holds.
    for doc, _ in runs.values():
        for cell in doc["matrix"]:
            if cell["memory"].startswith("hugetlb"):
                assert cell["status"] in ("ok", "unsupported"), cell
    assert any(c["ok"] for c in taken[0]["matrix"] if c["memory"] == "hugetlb")


def hugepages_pool() -> hp.Pool:
    pool = hp.read_pools().pool()
    if pool is None:
        pytest.skip(f"kernel {os.uname().release} has no huge page pool (no hugetlb)")
    return pool


# ----- every key, also without a userfaultfd --------------------------------------------------

def _check_every_key(out: dict[str, dict[str, Any]], kernel_faults: bool) -> None:
    """Every documented key in every format (nfd: the capability keys but reason), and,
    without kernel-mode faults, every feature, cell and ioctl false and a reason."""
    keys = documented_keys()
    false = {"github": "false", "env": "0", "nfd": "false", "facts": False}
    for fmt, values in out.items():
        want = [k for k in keys if not k.startswith("capacity_") and k != "reason"] \
            if fmt == "nfd" else keys
        assert set(want) <= set(values), (fmt, sorted(set(want) - set(values)))
        if fmt == "nfd":
            assert "reason" not in values and not any(k.startswith("capacity_") for k in values)
        if kernel_faults:
            continue
        assert values["userfaultfd"] == values["kernel_faults"] == false[fmt], fmt
        gated = {k: v for k, v in values.items()
                 if k.startswith(("feature_", "cell_", "ioctl_"))}
        assert set(gated.values()) == {false[fmt]}, (fmt, gated)
        if fmt != "nfd":
            assert values["reason"] not in ("", "''"), fmt


@pytest.mark.kernel
def test_every_key_as_nobody_with_sysctl_0(as_nobody: Run, sysctl) -> None:  # type: ignore[no-untyped-def]
    """Only a user-mode-only descriptor opens (5.11+), or nothing (5.10): every key is still
    there, false, with the cause in reason."""
    sysctl("vm/unprivileged_userfaultfd", "0")
    text = {fmt: as_nobody("probe", "--format", fmt, "--no-ioctl-check").stdout for fmt in FLAT}
    out = _outputs(text)
    _check_every_key(out, kernel_faults=False)
    facts = out["facts"]
    assert facts["user_mode_faults"] is knows_user_mode_only()
    assert "vm.unprivileged_userfaultfd is 0" in facts["reason"]
    assert "fix: " in facts["reason"] and "\n" not in facts["reason"]
    # The env line evaluates to the same reason.
    shell = subprocess.run(["bash", "-c", text["env"] + 'printf %s "$UFFD_REASON"'],
                           capture_output=True, text=True, check=True)
    assert shell.stdout == facts["reason"] == out["github"]["reason"]


def _nothing_opens(python: str, args: list[str]) -> list[str]:
    """uffdctl as nobody under a seccomp filter that fails the syscall (any flags): with
    /dev/userfaultfd root's 0600, or absent, no userfaultfd opens at all."""
    return seccomp.command("ENOSYS", NOBODY + [python, "-m", "uffdctl", *args])


@pytest.mark.kernel
def test_every_key_when_nothing_opens(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    text = {}
    for fmt in FLAT:
        res = subprocess.run(_nothing_opens(python, ["probe", "--format", fmt]),
                             capture_output=True, text=True, env=env, timeout=120, cwd="/")
        assert "Traceback" not in res.stderr, res.stderr
        text[fmt] = res.stdout
    out = _outputs(text)
    _check_every_key(out, kernel_faults=False)
    assert out["facts"]["user_mode_faults"] is False and out["facts"]["method"] == "none"
    assert "seccomp filter" in out["facts"]["reason"]


@pytest.mark.kernel
def test_exit_rule_flat_formats_exit_0_when_nothing_opens(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    """Needs the cli.py change of issue 14: before it, github, env and nfd exit 3 here."""
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    for fmt in FLAT:
        res = subprocess.run(_nothing_opens(python, ["probe", "--format", fmt]),
                             capture_output=True, text=True, env=env, timeout=120, cwd="/")
        assert res.returncode == 0, (fmt, res.returncode, res.stderr)
        assert res.stdout and res.stderr == "", (fmt, res.stderr)
    # json and the table keep their status: 3, nothing opens.
    for args in (["probe", "--json"], ["probe"]):
        res = subprocess.run(_nothing_opens(python, args), capture_output=True, text=True,
                             env=env, timeout=120, cwd="/")
        assert res.returncode == 3, (args, res.stderr)


@pytest.mark.kernel
def test_exit_rule_require_exits_1_after_writing_every_key(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    """Needs the cli.py change of issue 14 (facts: --require unmet is 1; nothing opens is
    not 3 but the unmet requirement's 1)."""
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    text = {}
    for fmt in FLAT:
        res = subprocess.run(_nothing_opens(python, ["probe", "--format", fmt, "-r",
                                                     "missing:anon"]),
                             capture_output=True, text=True, env=env, timeout=120, cwd="/")
        assert res.returncode == 1, (fmt, res.returncode, res.stderr)
        (line,) = res.stderr.strip().splitlines()
        assert line.startswith("uffdctl: requirement missing:anon not met: "), line
        text[fmt] = res.stdout
    _check_every_key(_outputs(text), kernel_faults=False)


def test_exit_rule_require_unmet_with_userfaultfd(run_cli: Run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A userfaultfd opens and a requirement is unmet (RWP: no released kernel has it yet):
    exit 1, every key written first, to $GITHUB_OUTPUT too.  (Holds before the cli.py change
    too, except for facts.)"""
    if _offers("rwp"):
        pytest.skip("this kernel offers RWP: the test needs a feature it does not offer")
    for fmt in FLAT:
        target = tmp_path / f"out.{fmt}"
        res = run_cli("probe", "--format", fmt, "--no-ioctl-check", "-r", "rwp", "-o",
                      str(target))
        assert res.returncode == 1, (fmt, res.stderr)
        assert "requirement rwp not met" in res.stderr
        values = _parse(fmt, target.read_text())
        want = documented_keys()
        if fmt == "nfd":
            want = [k for k in want if not k.startswith("capacity_") and k != "reason"]
        assert set(want) <= set(values), (fmt, sorted(set(want) - set(values)))


def _offers(key: str) -> bool:
    from uffdctl import uffd

    with uffd.Userfaultfd.open() as u:
        return bool(u.api(0)[0] & abi.FEATURE_BY_KEY[key].mask)
