"""`uffdctl probe --format github|env|nfd|facts`, the docs/ recipes that rely on them, and the
pytest plugin, all against the real probe of this machine.  (Capability apart from capacity,
every key in every run and the exit status rule: tests/test_capacity.py.)"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import seccomp
from conftest import NOBODY, ROOT

from uffdctl import abi, probe, uffd
from uffdctl.render import documents, formats

pytest_plugins = ["pytester"]


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return documents.probe_json(probe.run_probe(check_ioctls=True))


def _kv(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


@pytest.mark.kernel
def test_facts_table_matches_the_probe(doc: dict[str, Any]) -> None:
    f = formats.facts(doc)
    with uffd.Userfaultfd.open() as u:
        offered = u.api(0)[0]

    def offers(key: str) -> bool:
        return bool(offered & abi.FEATURE_BY_KEY[key].mask)

    # Root opens the syscall, whose descriptors handle kernel-mode faults.
    assert f["userfaultfd"] is f["kernel_faults"] is f["user_mode_faults"] is True
    assert (doc["api"]["method"], formats.method(doc), f["method"]) == ("syscall",) * 3
    assert (f["reason"], f["kernel"]) == ("", os.uname().release)
    # Every key of the documented lists, capability first, then capacity.
    sizes = [p["size"] for p in doc["capacity"]["hugepages"]]
    keys = formats.capability_keys() + formats.capacity_keys(sizes)
    assert list(f)[:len(formats.capability_keys())] == formats.capability_keys()
    assert set(f) == set(keys)  # no unknown feature bit on this kernel
    # A feature is true when this kernel offers it and it is usable (root: all offered are),
    # offered or not it has its key.
    assert {k for k in f if k.startswith("feature_") and f[k]} == {
        f"feature_{k}" for k in abi.FEATURE_BY_KEY if offers(k)}
    assert f["feature_minor_shmem"] is offers("minor_shmem") and f["feature_minor_shmem"] == next(
        x["usable"] for x in doc["api"]["features"] if x["name"] == "minor_shmem")
    # A cell is true when its registration succeeded; the cell and the feature of the same
    # name are two keys (cell_minor_shmem, feature_minor_shmem).
    cells = {formats.cell_key(c["mode"], c["memory"]): c["ok"] for c in doc["matrix"]}
    assert {k: f[k] for k in cells} == cells and len(cells) == len(abi.MATRIX_MODES) * 5
    assert f["cell_minor_anon"] is False  # anonymous memory never takes MINOR
    assert f["cell_missing_wp_shmem_private"] is all(
        offers(k) for k in abi.features_for("missing+wp", "shmem"))
    # An ioctl is true when a working cell hands it back and it did not fail when tried
    # (untried for want of a free huge page is not failing): CONTINUE with minor faults on
    # shmem or hugetlb; MOVE, listed on shmem but failing there, works on anon wherever the
    # kernel has it.
    usable = {i for c in doc["matrix"] if c["ok"] for i in c["ioctls"]
              if i not in c["failing_ioctls"]}
    assert {k for k, v in f.items() if k.startswith("ioctl_") and v} == {
        f"ioctl_{i.key}" for i in abi.RESOLVING_IOCTLS if i.key in usable}
    if offers("minor_shmem") or offers("minor_hugetlbfs"):
        assert f["ioctl_continue"] is True
    assert f["ioctl_move"] is offers("move")
    # Capacity: the pools as the document has them.
    for p in doc["capacity"]["hugepages"]:
        assert f"capacity_hugepages_free_{p['size']}" in f
        assert (f[f"capacity_hugepages_free_{p['size']}"],
                f[f"capacity_hugepages_total_{p['size']}"]) == (p["free"], p["total"])


def test_github_output_is_appended(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "github_output"
    out.write_text("earlier=step\n")
    res = run_cli("probe", "--format", "github", env={"GITHUB_OUTPUT": str(out)})
    assert res.returncode == 0, res.stderr
    assert res.stdout == ""
    text = out.read_text()
    assert text.startswith("earlier=step\n")
    kv = _kv(text)
    assert kv["userfaultfd"] == "true" and kv["cell_minor_shmem"] == "true"
    assert kv["feature_minor_shmem"] == "true"
    assert (kv["kernel_faults"], kv["user_mode_faults"], kv["method"]) == ("true", "true",
                                                                          "syscall")
    assert kv["cell_minor_anon"] == "false" and kv["kernel"] == os.uname().release
    assert kv["reason"] == ""
    assert all(re.fullmatch(r"\d+", v) for k, v in kv.items()
               if k.startswith("capacity_hugepages_"))
    assert all(re.fullmatch(r"[a-z0-9_]+", k) for k in kv)
    # Without GITHUB_OUTPUT the same lines go to stdout.
    plain = run_cli("probe", "--format", "github")
    assert _kv(plain.stdout) == {k: v for k, v in kv.items() if k != "earlier"}


def test_env_output_evaluates_in_a_shell(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--format", "env")
    assert res.returncode == 0, res.stderr
    assert all(re.fullmatch(r"UFFD_[A-Z0-9_]+=(0|1|\d+|'[^']*'|[A-Za-z0-9._-]+)", line)
               for line in res.stdout.splitlines())
    shell = subprocess.run(["bash", "-c", res.stdout + '\necho "$UFFD_AVAILABLE '
                            '$UFFD_CELL_MINOR_SHMEM $UFFD_CELL_MINOR_ANON $UFFD_KERNEL_FAULTS '
                            '$UFFD_FEATURE_MINOR_SHMEM $UFFD_METHOD $UFFD_KERNEL [$UFFD_REASON]"'],
                           capture_output=True, text=True, check=True)
    assert shell.stdout.split() == ["1", "1", "0", "1", "1", "syscall", os.uname().release,
                                    "[]"]


def test_env_quotes_what_a_shell_would_run(doc: dict[str, Any]) -> None:
    evil = {**doc, "kernel": {**doc["kernel"], "release": "6.1$(touch /tmp/x) `id`;'"}}
    (line,) = [x for x in formats.env(evil).splitlines() if x.startswith("UFFD_KERNEL=")]
    shell = subprocess.run(["bash", "-c", line + '\nprintf %s "$UFFD_KERNEL"'],
                           capture_output=True, text=True, check=True)
    assert shell.stdout == "6.1$(touch /tmp/x) `id`;'"


def test_nfd_feature_file(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "features.d" / "uffd"
    target.parent.mkdir()
    res = run_cli("probe", "--format", "nfd", "--output", str(target), "--nfd-expiry", "600")
    assert res.returncode == 0, res.stderr
    assert os.listdir(target.parent) == ["uffd"]  # the temporary file was renamed away
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    text = target.read_text()
    assert len(text.encode()) < formats.NFD_MAX_BYTES
    (expiry,) = re.findall(r"^# \+expiry-time=(\S+)$", text, re.M)
    when = dt.datetime.strptime(expiry, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
    now = dt.datetime.now(dt.timezone.utc)
    assert now + dt.timedelta(seconds=500) < when < now + dt.timedelta(seconds=700)
    labels = _kv(text)
    prefix = "uffd.feature.node.kubernetes.io/"
    assert all(k.startswith(prefix) for k in labels)
    # Kubernetes label rules: name <= 63 chars [A-Za-z0-9_.-], value likewise.
    name_re = r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
    assert all(re.fullmatch(name_re, k[len(prefix):]) for k in labels)
    assert all(re.fullmatch(name_re, v) for v in labels.values())
    assert labels[prefix + "cell-minor-shmem"] == labels[prefix + "feature-minor-shmem"] == "true"
    assert labels[prefix + "userfaultfd"] == labels[prefix + "kernel-faults"] == "true"
    assert labels[prefix + "method"] == "syscall"
    # Capability only: nothing that changes with load, and no text for people.
    names = {k[len(prefix):] for k in labels}
    assert not any(n.startswith("capacity-") for n in names) and "reason" not in names
    assert names == {formats.label_name(k) for k in formats.capability_keys()} - {"reason"}


def test_nfd_output_into_a_missing_directory_is_one_line(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--format", "nfd", "-o", str(tmp_path / "no" / "such" / "file"))
    assert res.returncode == 1
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("uffdctl: cannot write") and "fix:" in line


@pytest.mark.kernel
def test_facts_exit_0_even_when_userfaultfd_is_denied(nobody_python, sysctl) -> None:  # type: ignore[no-untyped-def]
    sysctl("vm/unprivileged_userfaultfd", "0")
    python, env = nobody_python
    cmd = seccomp.command("EPERM", NOBODY + [python, "-m", "uffdctl", "probe", "--format",
                                             "facts"])
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    facts = json.loads(res.stdout)
    assert facts["available"] is False and facts["userfaultfd"] is False
    assert facts["kernel_faults"] is False and facts["method"] == "none"
    assert "seccomp filter" in facts["reason"]
    assert set(formats.capability_keys()) <= set(facts)
    # The table form of the same situation is exit 3.
    table = subprocess.run(seccomp.command("EPERM", NOBODY + [python, "-m", "uffdctl",
                                                              "probe"]),
                           capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert table.returncode == 3


def test_format_and_json_conflict_is_a_usage_error(run_cli) -> None:  # type: ignore[no-untyped-def]
    res = run_cli("probe", "--json", "--format", "env")
    assert res.returncode == 2


# ----- docs/ recipes --------------------------------------------------------------------------

def test_github_workflow_uses_real_output_names(run_cli) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "docs" / "github-actions.yml").read_text()
    used = set(re.findall(r"steps\.uffd(?:_user)?\.outputs\.([a-z0-9_]+)", text))
    assert used, "the workflow reads no outputs"
    produced = _kv(run_cli("probe", "--format", "github").stdout)
    assert used <= set(produced), used - set(produced)
    assert "id: uffd" in text and "uffdctl)\" probe --format github" in text


def test_nfd_example_writes_where_nfd_reads(run_cli) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "docs" / "nfd-daemonset.yaml").read_text()
    assert "/etc/kubernetes/node-feature-discovery/features.d" in text
    assert "uffdctl probe --format nfd" in text
    labels = set(re.findall(r"uffd\.feature\.node\.kubernetes\.io/[a-z0-9-]+", text))
    produced = {k for k in _kv(run_cli("probe", "--format", "nfd").stdout)}
    assert labels and labels <= produced, labels - produced


def test_ansible_example_reads_real_fact_keys(run_cli) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "docs" / "ansible-facts.yml").read_text()
    facts = json.loads(run_cli("probe", "--format", "facts").stdout)
    for path in re.findall(r"ansible_local\.uffd\.([a-z0-9_.]+)", text):
        node: Any = facts
        for part in path.split("."):
            assert isinstance(node, dict) and part in node, path
            node = node[part]
    assert "uffdctl probe --format facts" in text and "facts.d/uffd.fact" in text


# ----- pytest plugin ----------------------------------------------------------------------------

def test_plugin_skips_with_the_probe_reason_and_probes_once(pytester: pytest.Pytester) -> None:
    from uffdctl import pytest_plugin

    pytester.makepyfile("""
        import pytest

        @pytest.mark.uffd("minor:shmem")
        def test_minor_shmem():
            pass

        @pytest.mark.uffd("minor:anon")
        def test_minor_anon():
            pass

        @pytest.mark.uffd("minor_shmem", "continue")
        def test_feature_and_ioctl():
            pass

        @pytest.mark.uffd("minor:shmem@user-mode")  # root's kernel-mode faults do too
        def test_user_mode_enough():
            pass

        def test_unmarked():
            pass
    """)
    before = pytest_plugin.PROBES_RUN
    result = pytester.runpytest_inprocess("-rs")
    result.assert_outcomes(passed=4, skipped=1)
    result.stdout.fnmatch_lines(["*uffd: minor:anon not available: *EINVAL*"])
    assert pytest_plugin.PROBES_RUN - before == 1


def test_plugin_reports_each_skip_at_the_test_that_asked(pytester: pytest.Pytester) -> None:
    """Two tests with the same unmet requirement and a third with its own: three lines of
    -rs, each at its test's file and line with its test's requirement, none at the plugin's
    file, none merged."""
    path = pytester.makepyfile(test_asks="""
        import pytest

        @pytest.mark.uffd("minor:anon")
        def test_first():
            pass

        @pytest.mark.uffd("minor:anon")
        def test_second():
            pass

        @pytest.mark.uffd("missing:anon", "rwp")
        def test_third():
            pass
    """)
    lines = path.read_text().splitlines()
    result = pytester.runpytest_inprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=3)
    skips = re.findall(r"^SKIPPED \[(\d+)\] (\S+?):(\d+): (.*)$", result.stdout.str(), re.M)
    assert len(skips) == 3, result.stdout.str()
    for count, where, _, why in skips:
        assert (count, where) == ("1", "test_asks.py"), (count, where)
        assert "pytest_plugin" not in where
        assert why.startswith("uffd: ")
    by_line = sorted((int(line), why) for _, _, line, why in skips)
    # Each at its own test: the line pytest shows is the test function's own (its decorator
    # or its def, by Python version).
    for name, (at, _) in zip(("test_first", "test_second", "test_third"), by_line,
                             strict=True):
        assert name in lines[at - 1] or name in lines[at], (name, lines[at - 1:at + 1])
    first, second, third = (why for _, why in by_line)
    assert first == second and first.startswith("uffd: minor:anon not available: ")
    # Only what is unmet, as the test wrote it: rwp (no released kernel has it yet).
    if not _offered_here("rwp"):
        assert third.startswith("uffd: rwp not available: not offered by kernel ")
        assert "missing:anon" not in third


def _offered_here(key: str) -> bool:
    with uffd.Userfaultfd.open() as u:
        return bool(u.api(0)[0] & abi.FEATURE_BY_KEY[key].mask)


def test_plugin_unknown_requirement_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        import pytest

        @pytest.mark.uffd("minor_hugetlb")
        def test_typo():
            pass
    """)
    result = pytester.runpytest_inprocess()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*minor_hugetlbfs*"])  # the suggestion


def test_plugin_without_markers_never_probes(pytester: pytest.Pytester) -> None:
    from uffdctl import pytest_plugin

    pytester.makepyfile("def test_plain():\n    pass\n")
    before = pytest_plugin.PROBES_RUN
    pytester.runpytest_inprocess().assert_outcomes(passed=1)
    assert before == pytest_plugin.PROBES_RUN


def test_plugin_takes_a_consumer_profile(pytester: pytest.Pytester) -> None:
    """profile= expands to the profile's requirements, judged as `probe --require-profile`
    judges them; an unknown profile stops the run at collection with close matches."""
    from uffdctl import profiles, require
    from uffdctl.probe import run_probe

    name = "criu-lazy-pages"
    met = all(r.met for r in require.check_requirements(
        run_probe(), profiles.profile(name).parsed()))
    pytester.makepyfile(f"""
        import pytest

        @pytest.mark.uffd(profile="{name}")
        def test_lazy():
            pass
    """)
    result = pytester.runpytest_inprocess("-rs")
    result.assert_outcomes(passed=1 if met else 0, skipped=0 if met else 1)
    pytester.makepyfile(test_typo="""
        import pytest

        @pytest.mark.uffd(profile="criu-lazy-page")
        def test_typo():
            pass
    """)
    bad = pytester.runpytest_inprocess("test_typo.py")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*unknown profile 'criu-lazy-page'; did you mean criu-lazy-pages?*"])
