"""Shared by the smaps tests: text handed out the way /proc hands smaps out."""

from __future__ import annotations

import random
from collections.abc import Callable


def short_reads(raw: bytes, rng: random.Random, most: int) -> Callable[[memoryview], int]:
    """A readinto over ``raw`` giving short reads of random length (1 to ``most`` bytes), as
    /proc hands out about an entry at a time, then 0 at the end."""
    pos = 0

    def readinto(view: memoryview) -> int:
        nonlocal pos
        k = min(len(view), rng.randint(1, most), len(raw) - pos)
        view[:k] = raw[pos:pos + k]
        pos += k
        return k
    return readinto
