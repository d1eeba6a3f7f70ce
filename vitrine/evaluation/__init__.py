"""Offline evaluation of recommendation strategies on held-out sessions (`vitrine evaluate`)."""
