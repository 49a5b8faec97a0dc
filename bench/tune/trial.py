"""One trial: the cell run through the ordinary run path with the trial's values, scored on its rows.

A trial is a run directory like any other (``<results_root>/<split>/<task>/<method>/<steps>-<hash>``), so a
repeated setting reuses its verified outputs and a killed trial resumes where it stopped. With pruning the run
goes in two stages: ``dataset.limit=prune_after`` first (the same run directory: ``limit`` is not part of a
run's identity), the pruner's decision, then the remaining images.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from bench.api import compose
from bench.cli import run_from_config
from bench.results import load_rows
from bench.tune.space import overrides as value_overrides
from bench.tune.spec import StudySpec


class TrialFailed(RuntimeError):
    """A trial whose run gave no objective (recorded on the trial, the study goes on)."""


class Skipped(TrialFailed):
    """The method skips the cell with these settings (e.g. GDP without an official scale for a task)."""


class Diverged(TrialFailed):
    """The restoration itself diverged (NaN/inf images or objective): a result of the setting, scored as the
    metric's worst value (:data:`bench.tune.spec.DIVERGED`) rather than a failure."""


def score(run_dir: Path, ids: list[str], objective: str) -> float:
    """The mean of ``objective`` over ``ids``' rows of a finished run."""
    rows, problems = load_rows(run_dir)
    by_id = {r["id"]: r for r in rows}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise TrialFailed(f"{run_dir}: no row for {missing[:3]} ({'; '.join(problems[:2]) or 'not restored'})")
    vals = [by_id[i].get(objective) for i in ids]
    if any(v is None for v in vals):
        raise TrialFailed(f"{run_dir}: the rows have no {objective!r} (a metric of images with ground truth)")
    vals = [float(v) for v in vals]
    mean = sum(vals) / len(vals)
    if not math.isfinite(mean):
        raise Diverged(f"{run_dir}: {objective} is {mean} (a diverged restoration)")
    return mean


def run_values(spec: StudySpec, values: dict, limit: int | None = None, log=None) -> tuple[Path, float]:
    """Run the cell with ``values`` on the split's first ``limit`` images (all: None); returns the run
    directory and the objective over those images. The run's printed output goes to ``log``."""
    n = spec.split["images"] if limit is None else limit
    ovs = spec.base_overrides + value_overrides(values) + [f"dataset.limit={n}"]
    cfg = compose(overrides=ovs)
    out = contextlib.redirect_stdout(log) if log is not None else contextlib.nullcontext()
    outcome: dict = {}
    with out:
        try:
            run_dir = run_from_config(cfg, outcome, overrides=ovs)
        except FloatingPointError as err:  # the runner refuses NaN outputs before saving them
            raise Diverged(str(err)) from err
    if run_dir is None:
        raise Skipped(f"method={spec.cell['method']} skips task={spec.cell['task']}: {outcome.get('skipped')}")
    return run_dir, score(run_dir, spec.split["ids"][:n], spec.objective)


def run_trial(spec: StudySpec, values: dict, trial=None, log=None) -> tuple[Path, float]:
    """Run one optuna trial: staged when pruning (raises ``optuna.TrialPruned`` when the pruner says so)."""
    import optuna

    n = spec.split["images"]
    if trial is not None and spec.prune and spec.prune_after < n:
        run_dir, first = run_values(spec, values, spec.prune_after, log)
        trial.report(first, spec.prune_after)
        if trial.should_prune():
            trial.set_user_attr("run_dir", str(run_dir))
            raise optuna.TrialPruned(f"{spec.objective} {first:.3f} on the first {spec.prune_after} image(s)")
    return run_values(spec, values, None, log)
