"""Anonymous resident memory of this process, sampled while a block runs (flat-memory tests).

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
