"""Test peers: servers and producers the tests and benchmarks talk to (not product code)."""
