"""Scaffolding shared by every Vitrine service: config, logging, metrics, auth, server, channels."""
