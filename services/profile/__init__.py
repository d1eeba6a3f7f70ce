"""Profile service: the single customer view on LMDB (event log, fold, merge, consent, erasure)."""
