"""Recommendation service: catalog, item vectors, FAISS retrieval, Numba re-ranking."""
