"""Anonymous resident memory of this process, sampled while a block runs (flat-memory tests).

A fixed MiB limit is one machine's allocator: flat memory is judged against what keeping the
results holds on the machine running the test (`assert_flat`), measured in the same run.

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
    """Yields a dict with the RSS at "start", the highest seen while the block ran ("peak",
    sampled in a thread) and the RSS at its "end" (what the block left allocated)."""
    seen = {"start": rss()}
    seen["peak"] = seen["start"]
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
        seen["end"] = rss()
        seen["peak"] = max(seen["peak"], seen["end"])


def assert_flat(small: dict[str, int], large: dict[str, int], kept: dict[str, int], what: str) -> None:
    """Start/peak/end readings (`peak_rss`, or tracemalloc's) of a streamed run at 1x and 4x the input, and of a 4x run whose results
    are still referenced when its block ends: streaming 3x more input must grow the peak by less
    than half of what keeping the 4x results holds (transient peaks, such as an inference arena,
    are in both streamed runs and cancel)."""
    mib = 2**20
    held = kept["end"] - kept["start"]
    assert held > 2 * mib, f"keeping the {what} held only {held / mib:.1f} MiB: too small a run to judge"
    grew = large["peak"] - small["peak"]
    assert grew < 0.5 * held, f"streaming 4x the {what} grew the peak by {grew / mib:.1f} MiB; keeping them holds {held / mib:.1f} MiB"
