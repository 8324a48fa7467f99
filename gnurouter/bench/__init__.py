"""Benchmarks shipped with the router: `gnurouter bench overload`, the SEDA experiment."""
