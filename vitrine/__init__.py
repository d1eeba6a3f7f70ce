"""Vitrine: real-time personalization engine. `vitrine.v1` holds the generated gRPC contract."""

__version__ = "0.1.0"
