"""Benchmarks of qa-serving: scripts that print markdown tables and save PNG plots (not timed tests).

``python -m bench.inference``, ``python -m bench.postprocess_cost``, ``python -m bench.serve_load``
(each has ``--help`` and ``--quick``); results go to ``bench/results/``. See ``docs/benchmarks.md``.
"""
