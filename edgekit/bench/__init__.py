"""The latency harness and its report (trtexec-compatible statistics), and board telemetry."""
