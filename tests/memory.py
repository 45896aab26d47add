"""Memory a block allocates, for the flat-memory tests: traced Python allocations, not RSS.

A streamed run and a run that keeps its results differ by Python objects (result lists, kept
predictions) and numpy buffers, which tracemalloc sees exactly. RSS does not: a kept list reuses
memory the allocator already holds from earlier runs (a kept 10,000-result list showed as 0.4 MiB
of RSS in one fresh clone), and an inference arena's transient peak varies with library versions
(a streamed run grew 3.7 MiB at the dependency floors). Memory-mapped Arrow files are the page
cache's and are not traced either, as they should not be.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def traced() -> Iterator[dict[str, int]]:
    """Yields a dict that holds, once the block ends, the traced bytes at its "start", the
    highest while it ran ("peak") and at its "end" (what it left allocated)."""
    tracemalloc.start()
    seen = {"start": tracemalloc.get_traced_memory()[0]}
    try:
        yield seen
    finally:
        seen["end"], seen["peak"] = tracemalloc.get_traced_memory()
        tracemalloc.stop()


def assert_flat(small: dict[str, int], large: dict[str, int], kept: dict[str, int], what: str) -> None:
    """`traced` readings of a streamed run at 1x and 4x the input, and of a 4x run whose results
    are still referenced when its block ends: streaming 3x more input must grow the peak by less
    than half of what keeping the 4x results holds."""
    mib = 2**20
    held = kept["end"] - kept["start"]
    assert held > 2 * mib, f"keeping the {what} held only {held / mib:.1f} MiB: too small a run to judge"
    grew = large["peak"] - small["peak"]
    assert grew < 0.5 * held, (
        f"streaming 4x the {what} grew the peak by {grew / mib:.1f} MiB; keeping them holds {held / mib:.1f} MiB"
    )
