"""Benchmark of the order-sign service against a floor app (see README, `make bench`)."""
