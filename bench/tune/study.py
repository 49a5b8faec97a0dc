"""The optuna loop of one study: a seeded TPE sampler over a journal file in the study's folder.

* **Resume**: the study lives in ``<study dir>/journal.log`` (optuna's JournalStorage, safe for several
  processes). ``tune.trials`` is the number of finished (complete + pruned) trials the study should hold; a
  rerun adds only the missing ones, so rerunning a finished study adds none. A trial left RUNNING by a killed
  process is marked failed and its values are queued again, so the next trial resumes its run directory.
  Each trial's sampler is seeded from (seed, worker, trials so far) (``sampler_for``), so a rerun does not
  replay the random points a killed driver already tried.
* **One study, one driver**: ``lock`` (an flock held by the ``bench.tune`` process) refuses a second
  invocation on the same study while one runs.
* **The official settings** run first on the same images (an ordinary run, not a trial); the preset holds
  them when no trial beats them, so a preset is never worse than official on the validation split.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from bench.checks import ConfigError
from bench.tune.space import suggest
from bench.tune.spec import DIVERGED, StudySpec
from bench.tune.trial import Diverged, Skipped, run_trial, run_values

FINISHED = ("COMPLETE", "PRUNED")


def storage(spec: StudySpec):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    spec.dir.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(spec.journal)))


def sampler_for(spec: StudySpec, worker: int = 0, asked: int = 0):
    """The sampler for the next trial of worker ``worker`` in a study that already holds ``asked`` trials.

    Its seed derives from (tune.seed, worker, asked), not from tune.seed alone: a sampler seeded once per
    process replays its random start-up points when a killed study is rerun, so the resumed study would repeat
    finished trials. TPE keeps no state between trials but its random stream (it reads the history from the
    study), so a fresh sampler per trial leaves an uninterrupted study as reproducible as before."""
    import numpy as np
    import optuna

    seed = int(np.random.SeedSequence([spec.seed, worker, asked]).generate_state(1)[0])
    if spec.sampler == "grid":  # the points are queued once by the driver (enqueue_grid): nothing is sampled
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=spec.startup_trials)


def open_study(spec: StudySpec, worker: int = 0):
    """The study (created on first use); ``work`` gives it a fresh sampler before each trial."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = sampler_for(spec, worker)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=0)
              if spec.prune else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=spec.name, storage=storage(spec), sampler=sampler, pruner=pruner,
                               direction=spec.direction, load_if_exists=True)


@contextlib.contextmanager
def lock(spec: StudySpec):
    spec.dir.mkdir(parents=True, exist_ok=True)
    path = spec.dir / "lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ConfigError(f"study {spec.dir} is being run by another python -m bench.tune ({f.read().strip()}). "
                              "Fix: wait for it (or stop it); a rerun afterwards continues the same study") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def enqueue_grid(spec: StudySpec, study) -> int:
    """Queue every grid point once, when the study is new (optuna's GridSampler stops the study from inside
    ``tell``, which an ask/tell loop cannot use); queued points survive in the journal, so a resumed scan goes
    on with the points not yet run."""
    import itertools

    if spec.sampler != "grid" or study.get_trials(deepcopy=False):
        return 0
    names = sorted(spec.grid)
    points = list(itertools.product(*(spec.grid[n] for n in names)))
    for point in points:
        study.enqueue_trial(dict(zip(names, point)))
    return len(points)


def counts(study) -> dict:
    out: dict = {}
    for t in study.get_trials(deepcopy=False):
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


def finished(study) -> int:
    c = counts(study)
    return sum(c.get(s, 0) for s in FINISHED)


def requeue_stale(study) -> list[int]:
    """Trials left RUNNING by a killed driver: failed, and their values queued again (run first)."""
    from optuna.trial import TrialState

    stale = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in stale:
        study.tell(t.number, state=TrialState.FAIL)
        study.enqueue_trial(dict(t.params), user_attrs={"requeued_from": t.number})
    return [t.number for t in stale]


def official_value(spec: StudySpec, study, log) -> float | None:
    """The official settings' objective on the same images (run once, stored with the study); None when the
    method skips the cell with its official settings (GDP has no official scale for denoise: a tuned one runs)."""
    key = "official_value"
    if key in study.user_attrs:
        v = study.user_attrs[key]
        return None if v is None else float(v)
    t0 = time.perf_counter()
    try:
        run_dir, value = run_values(spec, {}, None, log)
    except Diverged as err:  # the official settings diverge on this cell: the worst score, said once
        run_dir, value = f"diverged: {err}", DIVERGED[spec.objective]
    except Skipped as err:
        study.set_user_attr(key, None)
        study.set_user_attr("official_run_dir", f"skipped: {err}")
        print(f"[tune] official settings {_fmt_values(spec.official)}: {err}; the best trial becomes the preset",
              flush=True)
        return None
    study.set_user_attr(key, value)
    study.set_user_attr("official_run_dir", str(run_dir))
    print(f"[tune] official settings {_fmt_values(spec.official)}: {spec.objective} {value:.3f} "
          f"({time.perf_counter() - t0:.1f} s; {run_dir})", flush=True)
    return value


def _fmt_values(values: dict) -> str:
    def f(v):
        return f"{v:.4g}" if isinstance(v, float) else repr(v) if v is None else str(v)

    return " ".join(f"{k}={f(v)}" for k, v in sorted(values.items())) or "-"


def best(study, spec: StudySpec):
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not done:
        return None
    key = (lambda t: t.value) if spec.direction == "maximize" else (lambda t: -t.value)
    return max(done, key=key)


def work(spec: StudySpec, worker: int = 0, log_path: Path | None = None) -> None:
    """Run trials until the study holds ``spec.trials`` finished ones (counting trials other workers are
    running, so parallel workers stop together). Each trial prints one line."""
    import optuna
    from optuna.trial import TrialState

    study = open_study(spec, worker)
    log_path = log_path or spec.dir / f"runs.worker{worker}.log"
    failures = 0
    with open(log_path, "a") as log:
        while True:
            c = counts(study)
            if sum(c.get(s, 0) for s in FINISHED) + c.get("RUNNING", 0) >= spec.trials:
                return
            study.sampler = sampler_for(spec, worker, len(study.get_trials(deepcopy=False)))
            trial = study.ask()
            values = suggest(trial, spec.param_objects())
            trial.set_user_attr("worker", worker)
            t0 = time.perf_counter()
            try:
                run_dir, value = run_trial(spec, values, trial, log)
            except optuna.TrialPruned as why:
                study.tell(trial, state=TrialState.PRUNED)
                _line(spec, study, trial.number, values, f"pruned: {why}", t0)
                continue
            except Diverged as err:
                worst = DIVERGED[spec.objective]
                trial.set_user_attr("diverged", str(err))
                study.tell(trial, worst)
                _line(spec, study, trial.number, values, f"diverged (scored {spec.objective} {worst}): "
                      f"{str(err).split(';')[0]}", t0)
                continue
            except Exception as err:  # noqa: BLE001 - a failed trial is recorded, the study goes on
                failures += 1
                trial.set_user_attr("failure", f"{type(err).__name__}: {err}")
                study.tell(trial, state=TrialState.FAIL)
                _line(spec, study, trial.number, values, f"FAILED: {type(err).__name__}: {err}", t0)
                if failures > max(3, spec.trials):
                    raise RuntimeError(f"{failures} trials of {spec.name} failed; the last: {err}") from err
                continue
            trial.set_user_attr("run_dir", str(run_dir))
            study.tell(trial, value)
            _line(spec, study, trial.number, values, f"{spec.objective} {value:.3f}", t0)


def _line(spec: StudySpec, study, number: int, values: dict, what: str, t0: float) -> None:
    b = best(study, spec)
    official = study.user_attrs.get("official_value")
    tail = f"best {b.value:.3f} (#{b.number})" if b is not None else "no complete trial yet"
    if official is not None:
        tail += f", official {official:.3f}"
    print(f"[tune] {spec.cell['method']} x {spec.cell['task']} @ {spec.cell['steps']} steps: trial {number + 1} "
          f"[{finished(study)}/{spec.trials} done] {_fmt_values(values)} -> {what}; {tail} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)


def summary(spec: StudySpec, study) -> dict:
    b = best(study, spec)
    c = counts(study)
    official = study.user_attrs["official_value"]
    if official is None and b is None:
        raise RuntimeError(f"study {spec.name}: the official settings skip the cell and no trial completed")
    better = b is not None and (official is None or (b.value > official if spec.direction == "maximize"
                                                     else b.value < official))
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
                 if t.datetime_complete is not None and t.datetime_start is not None]
    return {
        "trial_seconds": round(sum(durations), 1),  # wall time of the trials (the official run not included)
        "values": dict(b.params) if better else dict(spec.official),
        "value": b.value if better else official,
        "from": f"trial {b.number}" if better else "official settings (no trial beat them on the split)",
        "best_trial": None if b is None else {"number": b.number, "value": b.value, "params": dict(b.params),
                                              "run_dir": b.user_attrs.get("run_dir")},
        "official_value": official,
        "official_run_dir": study.user_attrs.get("official_run_dir"),
        "complete": c.get("COMPLETE", 0), "pruned": c.get("PRUNED", 0), "failed": c.get("FAIL", 0),
    }
