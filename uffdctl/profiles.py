"""Consumer profiles: what a real program needs from userfaultfd, as data in the requirement
language (uffdctl.require), each requirement with where the consumer's own source says so.

A profile is checked like `probe --require` (`probe --require-profile NAME`) and listed by
`probe --list-profiles`.  Every requirement carries at least one Citation: the repository,
the file, the function (or, for documentation, the section), what the consumer does there,
and a line quoted from that file as read with the source search (qemu/qemu,
firecracker-microvm/firecracker, checkpoint-restore/criu, cloud-hypervisor/cloud-hypervisor);
uffdctl-probe(1) lists the same in its PROFILES section, and tests/test_require.py keeps the two
in step.  No requirement without a source: where a consumer depends on something its code does
not show (the size of a VM in huge pages, say), the profile says nothing, and the user adds
``--require hugepages:2M>=N`` for their own size.

Facts the citations rest on, beyond the quoted lines:
- QEMU postcopy resolves MISSING faults with UFFDIO_COPY/UFFDIO_ZEROPAGE; it never registers
  minor mode (ram_block_enable_notify() registers UFFDIO_REGISTER_MODE_MISSING only).
- The userfaultfd crate Firecracker uses registers MISSING mode in Uffd::register()
  ("This method only registers the given range for missing page faults": src/lib.rs of
  bytecodealliance/userfaultfd-rs).
- A vCPU's access to guest memory faults from inside KVM (a kernel-mode fault), which a
  UFFD_USER_MODE_ONLY descriptor fails (handle_userfault() in fs/userfaultfd.c).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .require import Requirement, parse_requirement


@dataclass(frozen=True)
class Citation:
    """Where a consumer's source shows a requirement."""

    repo: str  # owner/name on GitHub
    path: str  # file in the repository
    symbol: str  # the function, or "section 'Title'" of a document
    does: str  # what the consumer does there, in one line
    quote: str  # a line of that file, as read


@dataclass(frozen=True)
class ProfileRequirement:
    expression: str  # in the requirement language
    why: str  # one line: what the consumer needs it for
    cites: tuple[Citation, ...]


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    requirements: tuple[ProfileRequirement, ...]

    def parsed(self) -> list[Requirement]:
        """The requirements, parsed, each named "PROFILE: EXPRESSION" wherever a result is
        shown (the table, JSON's requirements[].name, the unmet lines on standard error)."""
        return [replace(parse_requirement(r.expression), text=f"{self.name}: {r.expression}",
                        profile=self.name) for r in self.requirements]


# ----- QEMU: migration/postcopy-ram.c, util/userfaultfd.c --------------------------------------

_QEMU = "qemu/qemu"
_POSTCOPY = "migration/postcopy-ram.c"
_QEMU_UFFD_OPEN = Citation(
    _QEMU, "util/userfaultfd.c", "uffd_open()",
    "opens every postcopy descriptor through /dev/userfaultfd, else the syscall, never with "
    "UFFD_USER_MODE_ONLY",
    "permission controls, meanwhile allows kernel faults without any")
_QEMU_KVM_FAULTS = Citation(
    _QEMU, _POSTCOPY, "blocktime_get_vcpu()",
    "counts faults by vCPU thread: guest accesses fault from KVM, and from kworkers with "
    "async page faults",
    "fault can even happen from a kworker..")
_QEMU_HOST_REGISTER = Citation(
    _QEMU, _POSTCOPY, "postcopy_ram_supported_by_host()",
    "registers an anonymous private test page in MISSING mode before allowing postcopy",
    "reg_struct.mode = UFFDIO_REGISTER_MODE_MISSING;")
_QEMU_HOST_IOCTLS = Citation(
    _QEMU, _POSTCOPY, "postcopy_ram_supported_by_host()",
    "refuses postcopy unless UFFDIO_REGISTER hands back WAKE, COPY and ZEROPAGE for that page",
    "feature_mask = 1ULL << _UFFDIO_WAKE |")
_QEMU_COPY = Citation(
    _QEMU, _POSTCOPY, "qemu_ufd_copy_ioctl()",
    "places each page received from the source with UFFDIO_COPY, a zero page with "
    "UFFDIO_ZEROPAGE",
    "ret = uffd_copy_page(userfault_fd, host_addr, from_addr, pagesize,")
_QEMU_ZERO = Citation(
    _QEMU, _POSTCOPY, "postcopy_place_page_zero()",
    "resolves zero pages with UFFDIO_ZEROPAGE where the RAM block's registration offered it",
    "Normal RAMBlocks can zero a page using UFFDIO_ZEROPAGE")
_QEMU_BLOCK_REGISTER = Citation(
    _QEMU, _POSTCOPY, "ram_block_enable_notify()",
    "registers every RAM block, whatever backs it, in MISSING mode and requires COPY there",
    "error_report(\"%s userfault: Region doesn't support COPY\", __func__);")
_QEMU_BLOCK_ZEROPAGE = Citation(
    _QEMU, _POSTCOPY, "ram_block_enable_notify()",
    "marks a RAM block zeroable when its registration hands back ZEROPAGE, which "
    "postcopy_place_page_zero() then uses",
    "qemu_ram_set_uf_zeroable(rb);")
_QEMU_BACKENDS = Citation(
    _QEMU, _POSTCOPY, "test_ramblock_postcopiable()",
    "accepts file-backed RAM blocks on tmpfs (memfd, shmem) and hugetlbfs only",
    "if (fs != QEMU_FS_TYPE_TMPFS && fs != QEMU_FS_TYPE_HUGETLBFS) {")
_QEMU_HUGETLBFS = Citation(
    _QEMU, _POSTCOPY, "ufd_check_and_apply()",
    "refuses postcopy with huge pages unless the kernel offers MISSING_HUGETLBFS",
    "have_hp = supported_features & UFFD_FEATURE_MISSING_HUGETLBFS;")
_QEMU_HUGE_ZERO = Citation(
    _QEMU, _POSTCOPY, "postcopy_temp_pages_setup()",
    "keeps a zeroed huge page to place with UFFDIO_COPY, since hugetlbfs has no UFFDIO_ZEROPAGE",
    "Map large zero page when kernel can't use UFFDIO_ZEROPAGE for hugepages")
_QEMU_THREAD_ID = Citation(
    _QEMU, _POSTCOPY, "ufd_check_and_apply()",
    "asks for UFFD_FEATURE_THREAD_ID whenever the kernel offers it (for postcopy-blocktime)",
    "asked_features |= UFFD_FEATURE_THREAD_ID;")
_QEMU_BLOCKTIME = Citation(
    _QEMU, _POSTCOPY, "mark_postcopy_blocktime_begin()",
    "attributes a fault to a vCPU by the message's thread id; without one nothing is counted",
    "if (!dc || ptid == 0) {")
_QEMU_PREEMPT_CAPS = Citation(
    _QEMU, "migration/migration.c", "migrate_caps_check()",
    "allows postcopy-preempt only together with postcopy-ram (migration/options.c from 8.1)",
    "error_setg(errp, \"Postcopy preempt requires postcopy-ram\");")
_QEMU_PREEMPT_PAGES = Citation(
    _QEMU, _POSTCOPY, "postcopy_temp_pages_setup()",
    "gives the preempt channel its own temporary page, placed with UFFDIO_COPY like the rest",
    "mis->postcopy_channels = RAM_CHANNEL_MAX;")


def _qemu_base(extra_register: tuple[Citation, ...] = ()) -> tuple[ProfileRequirement, ...]:
    """What every QEMU postcopy destination needs, whatever backs its RAM: the host check runs
    on an anonymous page first (postcopy_ram_supported_by_host())."""
    return (
        ProfileRequirement("kernel-faults", "vCPUs fault on guest RAM from inside KVM",
                           (_QEMU_UFFD_OPEN, _QEMU_KVM_FAULTS)),
        ProfileRequirement("missing:anon", "the host check registers an anonymous page",
                           (_QEMU_HOST_REGISTER, *extra_register)),
        ProfileRequirement("wake:anon", "required by the host check",
                           (_QEMU_HOST_IOCTLS,)),
        ProfileRequirement("copy:anon", "required by the host check; places every page",
                           (_QEMU_HOST_IOCTLS, _QEMU_COPY)),
        ProfileRequirement("zeropage:anon", "required by the host check; places zero pages",
                           (_QEMU_HOST_IOCTLS, _QEMU_ZERO)),
    )


QEMU_PROFILES = (
    Profile("qemu-postcopy-anon",
            "QEMU postcopy live migration, destination side, anonymous guest RAM (the default)",
            _qemu_base()),
    Profile("qemu-postcopy-shmem",
            "QEMU postcopy with a memfd or shmem (tmpfs) memory backend, share=on",
            _qemu_base() + (
                ProfileRequirement("missing_shmem", "the RAM block is registered on shmem",
                                   (_QEMU_BACKENDS, _QEMU_BLOCK_REGISTER)),
                ProfileRequirement("missing:shmem", "the RAM block is registered on shmem",
                                   (_QEMU_BLOCK_REGISTER,)),
                ProfileRequirement("copy:shmem", "COPY is required on the RAM block",
                                   (_QEMU_BLOCK_REGISTER, _QEMU_COPY)),
                ProfileRequirement("zeropage:shmem", "used when the registration offers it",
                                   (_QEMU_BLOCK_ZEROPAGE, _QEMU_ZERO)),
            )),
    Profile("qemu-postcopy-hugetlbfs",
            "QEMU postcopy with a hugetlbfs memory backend (memory-backend-file on hugetlbfs "
            "or memfd hugetlb=on), share=on",
            _qemu_base() + (
                ProfileRequirement("missing_hugetlbfs", "checked before postcopy starts",
                                   (_QEMU_HUGETLBFS,)),
                ProfileRequirement("missing:hugetlb", "the RAM block is registered on hugetlbfs",
                                   (_QEMU_BACKENDS, _QEMU_BLOCK_REGISTER)),
                ProfileRequirement("copy:hugetlb", "places every page, zero pages included",
                                   (_QEMU_BLOCK_REGISTER, _QEMU_HUGE_ZERO)),
            )),
    Profile("qemu-postcopy-blocktime",
            "QEMU postcopy with the postcopy-blocktime capability (vCPU blocktime statistics)",
            _qemu_base() + (
                ProfileRequirement("thread_id", "fault messages must name the faulting thread",
                                   (_QEMU_THREAD_ID, _QEMU_BLOCKTIME)),
            )),
    Profile("qemu-postcopy-preempt",
            "QEMU postcopy with the postcopy-preempt capability: what postcopy-ram needs, no "
            "more from userfaultfd (the preempt channel places pages the same way)",
            _qemu_base((_QEMU_PREEMPT_CAPS, _QEMU_PREEMPT_PAGES))),
)


# ----- Firecracker: src/vmm/src/persist.rs, the uffd examples, docs/ -----------------------------

_FC = "firecracker-microvm/firecracker"
_FC_PERSIST = "src/vmm/src/persist.rs"
_FC_UTILS = "src/firecracker/examples/uffd/uffd_utils.rs"
_FC_DOC = "docs/snapshotting/handling-page-faults-on-snapshot-resume.md"
_FC_KERNEL_MODE = Citation(
    _FC, _FC_PERSIST, "guest_memory_from_uffd()",
    "creates the snapshot-restore userfaultfd without UFFD_USER_MODE_ONLY",
    ".user_mode_only(false)")
_FC_KVM = Citation(
    _FC, "src/firecracker/examples/uffd/on_demand_handler.rs", "main()",
    "the example handler: guest page faults arrive from KVM on the vCPU thread",
    "the pagefault will be triggered from inside KVM on the vCPU thread")
_FC_REMOVE = Citation(
    _FC, _FC_PERSIST, "guest_memory_from_uffd()",
    "requires UFFD_FEATURE_EVENT_REMOVE, so the handler sees balloon madvise(MADV_DONTNEED)",
    "uffd_builder.require_features(FeatureFlags::EVENT_REMOVE);")
_FC_REMOVE_DOC = Citation(
    _FC, _FC_DOC, "section 'Userfaultfd interaction with balloon'",
    "a handler must handle UFFD_EVENT_REMOVE by zeroing the removed pages",
    "the userfaultfd interface sends `UFFD_EVENT_REMOVE`.")
_FC_REGISTER = Citation(
    _FC, _FC_PERSIST, "guest_memory_from_uffd()",
    "registers every guest memory region with Uffd::register(), which is MISSING mode",
    "uffd.register(mem_region.as_ptr().cast(), mem_region.size() as _)")
_FC_ANON = Citation(
    _FC, "src/vmm/src/vstate/memory.rs", "anonymous()",
    "maps restored guest memory private and anonymous, with MAP_HUGETLB for 2M pages",
    "libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | huge_pages.mmap_flags(),")
_FC_CREATE = Citation(
    _FC, _FC_PERSIST, "create_guest_memory()",
    "builds the guest memory of a UFFD restore with vstate::memory::anonymous()",
    "memory::anonymous(mem_state.regions(), track_dirty_pages, huge_pages)")
_FC_COPY = Citation(
    _FC, _FC_UTILS, "populate_from_file()",
    "the example handler resolves a fault by copying from the snapshot file with UFFDIO_COPY",
    ".copy(src as *const _, dst as *mut _, len, true)")
_FC_COPY_DOC = Citation(
    _FC, _FC_DOC, "section 'Registering memory to be handled via Userfault File Descriptors'",
    "the page fault handler loads pages with UFFDIO_COPY",
    "the page fault handler issues `UFFDIO_COPY` to load the previously")
_FC_ZERO = Citation(
    _FC, _FC_UTILS, "zero_out()",
    "the example handler answers faults on pages the balloon removed with UFFDIO_ZEROPAGE",
    ".zeropage(addr as *mut _, page_size, true)")
_FC_HUGE = Citation(
    _FC, "docs/hugepages.md", "section 'Huge Pages and Snapshotting'",
    "snapshots of microVMs backed by 2M hugetlbfs pages are restored only through UFFD",
    "microVMs backed with huge pages can only be restored via UFFD.")
_FC_HUGE_NO_BALLOON = Citation(
    _FC, "docs/hugepages.md", "section 'Known Limitations'",
    "hugetlbfs excludes the balloon: no UFFD_EVENT_REMOVE, no zero pages to place",
    "Currently, hugetlbfs support is mutually exclusive with the following")

FIRECRACKER_PROFILES = (
    Profile("firecracker-uffd-anon",
            "Firecracker snapshot restore with the Uffd memory backend, 4K guest memory",
            (
                ProfileRequirement("kernel-faults", "vCPUs fault on guest memory from KVM",
                                   (_FC_KERNEL_MODE, _FC_KVM)),
                ProfileRequirement("event_remove", "balloon inflation reaches the handler",
                                   (_FC_REMOVE, _FC_REMOVE_DOC)),
                ProfileRequirement("missing:anon", "guest memory is registered MISSING",
                                   (_FC_REGISTER, _FC_CREATE, _FC_ANON)),
                ProfileRequirement("copy:anon", "pages come from the snapshot file",
                                   (_FC_COPY, _FC_COPY_DOC)),
                ProfileRequirement("zeropage:anon", "pages the balloon removed come back zero",
                                   (_FC_ZERO, _FC_REMOVE_DOC)),
            )),
    Profile("firecracker-uffd-hugetlbfs",
            "Firecracker snapshot restore with the Uffd memory backend, 2M hugetlbfs guest "
            "memory (huge_pages=2M)",
            (
                ProfileRequirement("kernel-faults", "vCPUs fault on guest memory from KVM",
                                   (_FC_KERNEL_MODE, _FC_KVM)),
                ProfileRequirement("missing:hugetlb-private",
                                   "private MAP_HUGETLB guest memory is registered MISSING",
                                   (_FC_REGISTER, _FC_ANON, _FC_HUGE)),
                ProfileRequirement("copy:hugetlb-private", "whole huge pages from the snapshot",
                                   (_FC_COPY, _FC_HUGE_NO_BALLOON)),
            )),
)


# ----- CRIU: criu/uffd.c, criu/pie/restorer.c, criu/cr-check.c ---------------------------------

_CRIU = "checkpoint-restore/criu"
_CRIU_UFFD = "criu/uffd.c"
_CRIU_OPEN = Citation(
    _CRIU, _CRIU_UFFD, "uffd_open()",
    "opens the lazy-pages descriptor with the syscall only, never /dev/userfaultfd",
    "uffd = syscall(SYS_userfaultfd, flags);")
_CRIU_FEATURES = Citation(
    _CRIU, _CRIU_UFFD, "setup_uffd()",
    "asks for the non-cooperative events NEED_UFFD_API_FEATURES for each restored task",
    "unsigned long features = kdat.uffd_features & NEED_UFFD_API_FEATURES;")
_CRIU_NONCOOP = Citation(
    _CRIU, "criu/cr-check.c", "check_uffd_noncoop()",
    "`criu check --feature uffd-noncoop` fails unless all four events are offered",
    "pr_err(\"Non-cooperative UFFD is not supported\\n\");")
_CRIU_EVENTS = Citation(
    _CRIU, _CRIU_UFFD, "handle_uffd_event()",
    "follows fork, mremap, munmap and madvise of the restored tree through these events",
    "case UFFD_EVENT_FORK:")
_CRIU_REGISTER = Citation(
    _CRIU, "criu/pie/restorer.c", "enable_uffd()",
    "registers each lazy anonymous VMA in MISSING mode and expects WAKE, COPY and ZEROPAGE",
    "expected_ioctls = (1 << _UFFDIO_WAKE) | (1 << _UFFDIO_COPY) | (1 << _UFFDIO_ZEROPAGE);")
_CRIU_COPY = Citation(
    _CRIU, _CRIU_UFFD, "uffd_copy()",
    "fills lazy pages from the image or the page server with UFFDIO_COPY",
    "if (ioctl(lpi->lpfd.fd, UFFDIO_COPY, &uffdio_copy) &&")
_CRIU_ZERO = Citation(
    _CRIU, _CRIU_UFFD, "uffd_zero()",
    "answers a fault outside the dumped pages with UFFDIO_ZEROPAGE",
    "if (ioctl(lpi->lpfd.fd, UFFDIO_ZEROPAGE, &uffdio_zeropage) &&")

CRIU_PROFILES = (
    Profile("criu-lazy-pages",
            "CRIU restore --lazy-pages with the lazy-pages daemon (non-cooperative userfaultfd)",
            (
                ProfileRequirement("method=syscall", "CRIU has no /dev/userfaultfd path",
                                   (_CRIU_OPEN,)),
                *(ProfileRequirement(event, "a non-cooperative event CRIU asks for",
                                     (_CRIU_FEATURES, _CRIU_NONCOOP, _CRIU_EVENTS))
                  for event in ("event_fork", "event_remap", "event_unmap", "event_remove")),
                ProfileRequirement("missing:anon", "lazy VMAs are registered MISSING",
                                   (_CRIU_REGISTER,)),
                ProfileRequirement("wake:anon", "expected by enable_uffd()", (_CRIU_REGISTER,)),
                ProfileRequirement("copy:anon", "fills the lazy pages",
                                   (_CRIU_REGISTER, _CRIU_COPY)),
                ProfileRequirement("zeropage:anon", "pages that were never dumped",
                                   (_CRIU_REGISTER, _CRIU_ZERO)),
            )),
)


# ----- Cloud Hypervisor: vmm/src/uffd.rs -----------------------------------------------------

_CH = "cloud-hypervisor/cloud-hypervisor"
_CH_UFFD = "vmm/src/uffd.rs"
_CH_CREATE = Citation(
    _CH, _CH_UFFD, "create()",
    "opens the restore descriptor with the userfaultfd syscall only (O_CLOEXEC|O_NONBLOCK)",
    "let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | "
    "libc::O_NONBLOCK) };")
_CH_SHARED = Citation(
    _CH, _CH_UFFD, "module documentation",
    "registers guest RAM in place, so shared-memory (shared=on) guest RAM is registered too",
    "passthrough and shared-memory-backed guest RAM.")
_CH_REGISTER = Citation(
    _CH, _CH_UFFD, "register()",
    "registers guest RAM for missing-page faults",
    "mode: userfaultfd::UFFDIO_REGISTER_MODE_MISSING,")
_CH_COPY = Citation(
    _CH, _CH_UFFD, "copy()",
    "resolves each fault by copying the snapshot page in with UFFDIO_COPY",
    "userfaultfd::UFFDIO_COPY as libc::Ioctl,")
_CH_WAKE = Citation(
    _CH, _CH_UFFD, "wake()",
    "wakes the other waiters with UFFDIO_WAKE when UFFDIO_COPY returns EEXIST",
    "userfaultfd::UFFDIO_WAKE as libc::Ioctl,")

CLOUD_HYPERVISOR_PROFILES = (
    Profile("cloud-hypervisor-restore-ondemand",
            "Cloud Hypervisor demand-paged snapshot restore (--restore "
            "memory_restore_mode=ondemand) of shared-memory guest RAM",
            (
                ProfileRequirement("method=syscall", "no /dev/userfaultfd path",
                                   (_CH_CREATE,)),
                ProfileRequirement("missing:shmem", "guest RAM is registered MISSING in place",
                                   (_CH_REGISTER, _CH_SHARED)),
                ProfileRequirement("copy:shmem", "every page comes from the snapshot",
                                   (_CH_COPY,)),
                ProfileRequirement("wake:shmem", "after a racing UFFDIO_COPY (EEXIST)",
                                   (_CH_WAKE,)),
            )),
)


PROFILES: tuple[Profile, ...] = (QEMU_PROFILES + FIRECRACKER_PROFILES + CRIU_PROFILES
                                 + CLOUD_HYPERVISOR_PROFILES)
PROFILE_BY_NAME = {p.name: p for p in PROFILES}


class UnknownProfile(LookupError):
    """A profile name nobody defined; the message suggests the close ones."""


def profile(name: str) -> Profile:
    """The profile called ``name``; UnknownProfile (one line, close matches) otherwise."""
    found = PROFILE_BY_NAME.get(name.strip().lower())
    if found is not None:
        return found
    import difflib

    close = difflib.get_close_matches(name.strip().lower(), list(PROFILE_BY_NAME), n=3,
                                      cutoff=0.5)
    hint = (f"did you mean {' or '.join(close)}?" if close else
            "the profiles are " + ", ".join(PROFILE_BY_NAME))
    raise UnknownProfile(f"unknown profile {name!r}; {hint} (uffdctl probe --list-profiles)")


def to_json() -> list[dict[str, object]]:
    """Every profile as JSON (`probe --list-profiles --json`)."""
    return [{"name": p.name, "description": p.description,
             "requirements": [{"expression": r.expression, "why": r.why,
                               "cites": [{"repo": c.repo, "path": c.path, "symbol": c.symbol,
                                          "does": c.does, "quote": c.quote} for c in r.cites]}
                              for r in p.requirements]}
            for p in PROFILES]


def to_text() -> str:
    """Every profile as plain text (`probe --list-profiles`)."""
    lines: list[str] = []
    for p in PROFILES:
        lines += [f"{p.name}: {p.description}"]
        for r in p.requirements:
            lines += [f"  {r.expression}  ({r.why})"]
            lines += [f"      {c.repo} {c.path} {c.symbol}: {c.does}" for c in r.cites]
        lines += [""]
    return "\n".join(lines).rstrip("\n") + "\n"
