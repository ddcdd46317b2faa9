"""No-op time of `reconcile --once` for fleets of 1, 4 and 8 real test hosts."""
