"""Handing freed heap memory back to the operating system between indexing steps.

glibc keeps memory that Python and torch free in its arenas for reuse, and the encoder's many tensor
sizes leave it fragmented: on 3,000 passages, half of the encoder's resident-set growth was such freed
memory (docs/benchmarks.md). `malloc_trim(0)` returns the free pages; nothing else changes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows): nothing to do
        return None


def release_freed_memory() -> bool:
    """Run glibc's malloc_trim(0) where there is one; True if it ran."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
