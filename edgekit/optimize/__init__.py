"""The latency-budget search: the most accurate compressed model that meets a latency budget on a named device (measured where it runs, estimated where it does not)."""
