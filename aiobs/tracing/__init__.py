"""Traces: the tracer provider, its sampler and propagators, and the OTLP exporter."""
