"""Segmentation service: built-in and store-defined segments, offers, Evaluate and EstimateSize."""
