"""Open-loop load benchmark results of `vitrine loadtest` (code in vitrine/loadtest/) and the gateway-only run."""
