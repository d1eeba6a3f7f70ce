"""Learned second stage: features per (shopper, candidate) for a gradient-boosted ranker."""
