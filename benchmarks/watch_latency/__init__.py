"""Watch mode: latency from saving desired-state.yaml to serving, and the cost of a no-op pass.

Run: python -m benchmarks.watch_latency; see __main__.py.
"""
