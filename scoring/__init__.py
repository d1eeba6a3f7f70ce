"""Pure, fast scoring functions over NumPy arrays (no grpc, no services)."""
