"""``python -m bench.tune [overrides]``: tune one cell, then write its preset.

::

    python -m bench.tune method=dps task=deblur_gauss steps=20 tune.trials=8
    python -m bench.tune method=diffpir task=sr4 steps=100 tune.trials=40 tune.objective=lpips tune.jobs=2
    python -m bench.tune method=ddrm task=sr4 model=adm_imagenet256 dataset=imagenet_tune \\
        dataset.root=/data/ILSVRC2012/val tune.launcher=slurm tune.jobs=8 tune.slurm.partition=gpu

The overrides are ``python -m bench``'s (method, task, steps, model, ...) plus ``tune.*`` (conf/config.yaml).
Exit codes: 0 done, 2 an input error (one paragraph, before any trial), 130 Ctrl-C (the study keeps every
finished trial; rerun the same command to continue it).
"""

from __future__ import annotations

import sys
import time

from bench.checks import ConfigError
from bench.cli import USER_ERRORS
from bench.tune.space import SpaceError
from bench.tune.trial import TrialFailed


def tune(overrides: list[str]) -> dict:
    """Build, run (or continue) the study of ``overrides`` and write its preset; returns the preset."""
    from bench.tune import preset, study as st, workers
    from bench.tune.spec import build

    spec = build(overrides)
    print(f"[tune] study {spec.name}: {spec.cell['method']} x {spec.cell['task']} @ {spec.cell['steps']} steps, "
          f"prior {spec.cell['prior']}; split {spec.split['dataset']} ({spec.split['split']}, "
          f"{spec.split['images']} images); {spec.objective} ({spec.direction}); space "
          + ", ".join(p["name"] for p in spec.params) + f"; journal {spec.journal}", flush=True)
    if spec.split["forced_test_split"]:
        print(f"[tune] WARNING: tuning on the {spec.split['split']} split {spec.split['dataset']} "
              "(tune.allow_test_split=true): the preset is labelled 'TEST split, forced' wherever it is used",
              flush=True)
    t0 = time.perf_counter()
    with st.lock(spec):
        (spec.dir / "study.json").write_text(spec.to_json())
        s = st.open_study(spec)
        queued = st.enqueue_grid(spec, s)
        if queued:
            print(f"[tune] grid: {queued} points queued ({', '.join(f'{k}: {len(v)}' for k, v in spec.grid.items())})",
                  flush=True)
        stale = st.requeue_stale(s)
        if stale:
            print(f"[tune] trial(s) {', '.join(str(n + 1) for n in stale)} were left running by a killed run: "
                  "marked failed and queued again (their run directories resume)", flush=True)
        have = st.finished(s)
        if have >= spec.trials:
            print(f"[tune] the study already holds {have} finished trials (tune.trials={spec.trials}): "
                  "no new trial", flush=True)
        with open(spec.dir / "runs.log", "a") as log:
            st.official_value(spec, s, log)
        if have < spec.trials:
            if spec.jobs == 1 and spec.launcher == "processes":
                st.work(spec, 0, spec.dir / "runs.log")
            else:
                workers.run(spec)
        s = st.open_study(spec)
        result = st.summary(spec, s)
        doc = preset.write(spec, result)
    p = doc["provenance"]
    print(f"[tune] {p['trials']} trials ({p['pruned']} pruned, {p['failed']} failed) in "
          f"{time.perf_counter() - t0:.0f} s; {spec.objective}: {p['value']:.3f} with {doc['values']} "
          f"({p['chosen']}; official " + ("skips the cell" if p["official_value"] is None else
                                           f"{p['official_value']:.3f}") + ")", flush=True)
    print(f"[tune] preset: {spec.preset_path}\n[tune] apply it: python -m bench "
          + " ".join(o for o in spec.user_overrides if not o.split("=", 1)[0].lstrip("+~").startswith("tune")) + " tuned=auto",
          flush=True)
    return doc


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    bad = [a for a in argv if a.startswith("-")]
    if bad:
        print(f"error: python -m bench.tune takes only key=value overrides, not {bad[0]!r} (a sweep of studies: "
              "one command per cell, e.g. in a shell loop; trials in parallel: tune.jobs=N)", file=sys.stderr)
        sys.exit(2)
    try:
        tune(argv)
    except KeyboardInterrupt:
        print("[tune] interrupted; finished trials are kept in the study: rerun the same command to continue",
              file=sys.stderr)
        sys.exit(130)
    except (ConfigError, SpaceError, TrialFailed, *USER_ERRORS) as err:  # TrialFailed here: the official run
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
