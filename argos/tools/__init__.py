"""Tools built on the library: benchmarks, runs, training, calibration, the Pareto report."""
