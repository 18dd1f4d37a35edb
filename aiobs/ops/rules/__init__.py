"""Prometheus recording and alerting rules generated from the metric catalog."""
