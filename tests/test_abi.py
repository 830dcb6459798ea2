"""The ABI tables against the fact sheet's values, and the decoders' handling of the unknown."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from uffdctl import abi

# Request values as the kernel header defines them (include/uapi/linux/userfaultfd.h, generic
# _IOC encoding: x86_64, aarch64, riscv64, loongarch64, i386).
REQUESTS = {
    "api": 0xC018AA3F, "register": 0xC020AA00, "unregister": 0x8010AA01, "wake": 0x8010AA02,
    "copy": 0xC028AA03, "zeropage": 0xC020AA04, "move": 0xC028AA05,
    "writeprotect": 0xC018AA06, "continue": 0xC020AA07, "poison": 0xC020AA08,
    "rwprotect": 0xC018AA09, "set_mode": 0x4010AA0A,
}


def test_request_values() -> None:
    for key, value in REQUESTS.items():
        assert abi.IOCTL_BY_KEY[key].request == value, key
    assert abi.USERFAULTFD_IOC_NEW == 0xAA00
    assert abi.UFFDIO_CONTINUE_RC_ONLY == 0x8020AA07


def test_feature_bits_are_unique_and_complete_through_move() -> None:
    bits = [f.bit for f in abi.FEATURES]
    assert len(bits) == len(set(bits))
    released = sum(f.mask for f in abi.FEATURES if not f.first.endswith("-rc"))
    assert released == 0x1FFFF  # UFFD_API_FEATURES in 6.8 ... 7.2


def test_decoders_keep_unknown_bits() -> None:
    assert abi.feature_names((1 << 9) | (1 << 31) | (1 << 40)) == [
        "minor_hugetlbfs", "initialized", "bit_40"]
    assert abi.ioctl_names(0x8000000000000003) == ["register", "unregister", "api"]
    assert abi.ioctl_names(1 << 20) == ["bit_20"]
    assert abi.pagefault_flag_names(0x5) == ["WRITE", "MINOR"]
    assert abi.pagefault_flag_names(1 << 7) == ["bit_7"]


@given(st.integers(min_value=0, max_value=(1 << 64) - 1))
def test_feature_names_count_every_set_bit(mask: int) -> None:
    assert len(abi.feature_names(mask)) == bin(mask).count("1")


def test_normalize_names() -> None:
    for name in ("minor_hugetlbfs", "MINOR_HUGETLBFS", "UFFD_FEATURE_MINOR_HUGETLBFS"):
        assert abi.normalize_feature(name) == "minor_hugetlbfs"
    assert abi.normalize_feature("minor_hugetlb") is None
    assert abi.normalize_ioctl("UFFDIO_CONTINUE") == "continue"
    assert abi.mode_value("missing+wp+minor") == 0x7
    assert abi.fault_kind(0x4) == "minor" and abi.fault_kind(0x3) == "wp"
    assert abi.fault_kind(0x1) == "missing"


def test_vmflag_uffd_mnemonics() -> None:
    assert abi.UFFD_MNEMONICS == {"um": "missing", "uw": "wp", "ui": "minor", "ur": "rwp"}
