"""Anonymous resident memory of this process, sampled while a block runs (flat-memory tests).

A fixed MiB limit is one machine's allocator: flat memory is judged against what keeping the
results costs on the machine running the test (`assert_flat`), measured in the same run.

RssAnon, not the whole RSS: pages of memory-mapped Arrow files count in RSS as they are read,
but they are the page cache's to drop, not memory the program holds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager



def rss() -> int:
    """Current anonymous resident memory in bytes (Linux; not the peak, which only ever grows)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))


@contextmanager
def peak_rss(interval: float = 0.002) -> Iterator[dict[str, int]]:
    """Yields a dict whose "peak" is the highest RSS seen while the block ran (sampled in a thread)."""
    seen = {"peak": rss()}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen["peak"] = max(seen["peak"], rss())
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()
        seen["peak"] = max(seen["peak"], rss())


def assert_flat(small: int, large: int, kept: int, what: str) -> None:
    """Peaks of a streamed run at 1x and 4x the input, and of a 4x run that keeps its results:
    streaming 3x more input must grow the peak by less than half of what keeping them grows it."""
    mib = 2**20
    assert kept - small > 2 * mib, f"keeping {what} grew the peak by only {(kept - small) / mib:.1f} MiB: too small a run to judge"
    assert large - small < 0.5 * (kept - small), (
        f"streaming 4x the {what} grew the peak by {(large - small) / mib:.1f} MiB; keeping them grew it by {(kept - small) / mib:.1f} MiB")
