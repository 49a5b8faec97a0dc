"""Notices: what a run tells the user that is the same for every cell (e.g. "LPIPS n/a for this run: the
backbone is not in the asset cache"), as opposed to the cell's own results and errors.

A single run prints each notice as ``[bench] <message>``, as always. In a sweep,
:class:`bench.sweep.SweepSummary` brackets every job with :func:`start_job` / :func:`end_job`: a notice is then
printed once per process (the basic launcher runs every cell in the launching process: once per sweep) and
collected into the job's record, so that the sweep's summary can print, once, the notices that jobs printed
only to their own logs (submitit / SLURM jobs run in other processes). No Hydra here: runtime code calls
:func:`notice`.
"""

from __future__ import annotations

_printed: set[str] = set()  # printed by this process during the current sweep
_job: list[str] | None = None  # the current sweep job's notices; None outside a sweep job


def notice(message: str) -> None:
    """Print ``[bench] <message>`` (in a sweep: unless this process printed it already) and collect it."""
    if _job is not None:
        if message not in _job:
            _job.append(message)
        if message in _printed:
            return
        _printed.add(message)
    print(f"[bench] {message}", flush=True)


def start_sweep() -> None:
    """Forget what earlier sweeps in this process printed."""
    global _job
    _printed.clear()
    _job = None


def start_job() -> None:
    global _job
    _job = []


def end_job() -> list[str]:
    """The distinct notices of the job that ends (in order), and back to single-run behaviour."""
    global _job
    said, _job = _job or [], None
    return said


def printed() -> set[str]:
    """The notices this process printed during the current sweep."""
    return set(_printed)
