"""Demo data and simulated traffic for the embedded demo, the tests and the benchmarks."""
