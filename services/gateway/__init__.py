"""PersonalizationService: the thin gateway composing profile, segmentation and recommendation."""
