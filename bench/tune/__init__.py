"""``python -m bench.tune``: tune a method's hyper-parameters for one (prior, task, method, steps) cell on a
validation split, and write the preset ``python -m bench`` applies (``tuned=auto``). Tooling: it imports the
runtime (every trial is an ordinary run through :func:`bench.cli.run_from_config`), never the reverse.

* :mod:`bench.tune.space`  the ``tune.space`` block of a method's YAML -> optuna distributions
* :mod:`bench.tune.spec`   what a study is: the cell, the split's images, the objective; its id and folder
* :mod:`bench.tune.trial`  one trial = one run (staged for pruning); the objective from its per-image rows
* :mod:`bench.tune.study`  the optuna loop: seeded TPE, journal storage, resume, the progress line
* :mod:`bench.tune.workers` parallel trials: local processes or submitit jobs (local / SLURM)
* :mod:`bench.tune.preset` the preset file and its provenance
* :mod:`bench.tune.cli`    the command line
"""
