"""Early exit measured: the threshold sweep, the operating-point rule, the engine timed against
the plain forward, and whole requests.

Its entry point is :func:`ragrec.experiments.early_exit.benchmark.run_exit_benchmark`.
"""
