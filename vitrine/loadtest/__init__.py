"""The load test `vitrine loadtest` runs: open-loop generator, echo ceiling, CPU accounting, report.

It lives in the installed package so the command needs no checkout; `benchmarks/loadtest/` keeps
the results and the benchmark scripts that import it (`gateway_only`, in front of `fakes`).
"""
