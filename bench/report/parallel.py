"""Worker processes for the report's independent parts (``python -m bench.report --jobs N``).

:func:`pmap` maps a function over items in ``jobs`` forked worker processes and returns the results in the
items' order; ``jobs = 1`` (or a single item, or a platform without ``fork``) calls it in this process. The
workers are forked, so the function and its inputs are inherited, never pickled (a closure over the whole
results root costs nothing to send); only the results travel back. Everything the report maps is a pure
function of its item: every interval and Monte Carlo test is seeded by its cell identity
(:func:`bench.report.stats.cell_seed`), never by a global random stream or the order of execution, so the
report is byte-identical for every ``--jobs`` (tests/report/test_jobs.py checks it).
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, TypeVar

__all__ = ["check_jobs", "pmap", "usable_cpus"]

T = TypeVar("T")
R = TypeVar("R")

_TASK: tuple | None = None  # (function, items) of the running pmap: inherited by the forked workers


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def check_jobs(jobs) -> int:
    """``jobs`` as a positive int; None = :func:`usable_cpus`. ValueError otherwise."""
    if jobs is None:
        return usable_cpus()
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} is not a positive integer. Fix: pass --jobs N with N >= 1 (1 = no worker "
                         f"processes; default: the {usable_cpus()} usable CPU cores)")
    return jobs


def _call(index: int):
    fn, items = _TASK
    return fn(items[index])


def pmap(fn: Callable[[T], R], items: Iterable[T], jobs: int = 1) -> list[R]:
    """``[fn(x) for x in items]``, computed by up to ``jobs`` forked worker processes (see the module
    docstring); items are handed out in chunks of about an eighth of a worker's share."""
    global _TASK
    items = list(items)
    jobs = min(check_jobs(jobs), len(items))
    if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods() or _TASK is not None:
        return [fn(x) for x in items]
    _TASK = (fn, items)
    try:
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_call, range(len(items)), chunksize=max(1, len(items) // (8 * jobs))))
    finally:
        _TASK = None
