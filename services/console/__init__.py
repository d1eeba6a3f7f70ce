"""Vitrine console: the operator's web pages (HTTP), built on the public gRPC APIs only."""
