"""`/metrics` in Prometheus' text format: requests, tokens, tokens/s, queue depth, latency.

Each server has its own registry (prometheus_client's, the library Prometheus documents for
Python), so several servers in one process (the tests) never share counters.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Request latencies from a tag call (milliseconds) to a long generation (minutes).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("lightkit_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "code"], registry=self.registry)  # fmt: skip
        self.generated_tokens = Counter("lightkit_generated_tokens", "Tokens generated", registry=self.registry)
        self.tokens_per_second = Gauge("lightkit_tokens_per_second", "Tokens per second of the last decoding wave",
                                       registry=self.registry)  # fmt: skip
        self.joined_rows = Counter("lightkit_joined_rows", "Decoder rows that joined a running wave",
                                   registry=self.registry)  # fmt: skip
        self.queue_depth = Gauge("lightkit_queue_depth", "Requests waiting for a wave", registry=self.registry)
        self.latency = Histogram("lightkit_request_latency_seconds", "Time from request to response, by endpoint",
                                 ["endpoint"], buckets=BUCKETS, registry=self.registry)  # fmt: skip

    def text(self) -> bytes:
        return generate_latest(self.registry)
