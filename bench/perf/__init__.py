"""Performance tooling (``python -m bench.perf``): throughput of the real restore code paths with random
weights in several speed modes (:mod:`~bench.perf.throughput`, cells built by :mod:`~bench.perf.cells`),
torch.profiler summaries (:mod:`~bench.perf.profiling`) and the harness overhead of a finished run
(``python -m bench.perf.overhead RUN_DIR``, :mod:`~bench.perf.overhead`). Tooling imports the runtime,
never the reverse (tests/test_layout.py).
"""
