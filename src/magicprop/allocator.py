"""glibc's malloc policy for a run's large frames: the two settings magicprop makes, in one place.

glibc maps a block over its mmap threshold on its own and unmaps it when freed; smaller blocks come from the heap,
which keeps its pages. By default the threshold rises to the size of each large block freed (up to 32 MB), so which
policy a frame's buffers get depends on what the process freed before. magicprop fixes it, per process:

- `return_freed_memory` (the CLI, at start): blocks over 1 MB are mapped on their own and handed back when freed. A
  4K uint8 frame (25 MB) would otherwise come from the heap once one was freed, and the heap keeps its high-water
  mark while frames of several sizes come and go: a 16-frame 4K `flow` run peaked at 2.64 GB of RSS, 2.41 GB with
  this (the same output bytes).
- `keep_freed_pages` (a `flow` render at full resolution up to `KEEP_PAGES_MAX_PIXELS`): the opposite trade. Every
  freed full-size temporary of a 1080p frame (a float32 image is 25 MB) came back as fresh pages, ~65,000 page faults
  and 0.15-0.2 CPU s of kernel time per frame (a quarter of the frame); blocks up to 32 MB kept on the heap with 256 MB
  of slack at its top let each frame reuse the last one's pages. Above 1440p the trade turns: the heap would keep a 4K
  clip's 25-33 MB frame blocks (+0.54 GB peak RSS at 4K, for 0.68x the CPU), and a 4K run is bound by memory first.

Only the allocator's policy changes: no number computed. Both return False where there is no glibc `mallopt`.
"""

from __future__ import annotations

import ctypes
import functools

M_TOP_PAD, M_MMAP_THRESHOLD = -2, -3
KEEP_PAGES_MAX_PIXELS = 2560 * 1440


def _mallopt(options: dict[int, int]) -> bool:
    """Set each glibc `mallopt(option, value)`; True if every one was accepted."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(option, value) == 1 for option, value in options.items()])


def return_freed_memory(threshold: int = 1 << 20) -> bool:
    """Blocks over `threshold` bytes mapped on their own and handed back to the system when freed (setting the
    threshold also stops its rise)."""
    return _mallopt({M_MMAP_THRESHOLD: threshold})


@functools.cache
def keep_freed_pages() -> bool:
    """Blocks up to 32 MB (the threshold's maximum on 64-bit) from the heap, with 256 MB of slack at its top: freed
    temporaries' pages are reused by the next frame. Set once per process."""
    return _mallopt({M_MMAP_THRESHOLD: 32 << 20, M_TOP_PAD: 256 << 20})
