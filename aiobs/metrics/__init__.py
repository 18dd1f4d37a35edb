"""Prometheus metrics: instruments, multiprocess mode, GPU gauges and label limits."""
