"""One definition of the latency figures lightkit reports (evaluate, benchmark, the export manifest
and the benchmark scripts): numpy's percentiles, linear interpolation between the sorted times."""

from __future__ import annotations

import numpy as np


def latency_summary(times_ms: list[float]) -> dict[str, float]:
    """Median and p90 of wall times in milliseconds, rounded to 0.1 microsecond."""
    median, p90 = np.percentile(times_ms, [50, 90])
    return {"median_ms": round(float(median), 4), "p90_ms": round(float(p90), 4)}
