"""The latency harness, latency plots and board telemetry (tegrastats, nvpmodel, clocks). The report
types live in :mod:`edgekit.stats`; ``edgekit.bench.stats`` re-exports them."""
