"""Grafana dashboards as code (grafanalib, the ``aiobs[dashboards]`` extra)."""
