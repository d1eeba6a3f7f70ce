"""Prometheus metrics of the event log's consumers."""

from __future__ import annotations

from prometheus_client import Counter

HOLES = Counter("vitrine_eventlog_delivery_holes_total",
                "JetStream deliveries lost in transit (a fetch answer lost with a node or connection); "
                "each re-creates the consumer after the last item handled", ["reader"])
