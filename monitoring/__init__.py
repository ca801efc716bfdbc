"""Monitoring: the worker's Prometheus metrics; configuration, alert rules and dashboards
live beside this module."""
