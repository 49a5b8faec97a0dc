"""What a study is (:class:`StudySpec`), built and checked before any trial runs, and where it lives.

A study tunes one cell on one split: its identity covers the composed official config of the cell on the
validation split (minus the searched keys), the split's images (content sha256 and the ids used), the code
fingerprint, and the tool settings that change what the study finds (objective, space, sampler seed and
start-up trials, pruning). Same identity, same study folder ``<results_root>/.tune/<prior>/<name>/``
(``journal.log`` is optuna's storage): a rerun continues it; anything else starts a new one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from bench.api import compose
from bench.checks import ConfigError, check_dataset_options, check_missing, check_results_root
from bench.cli import _instantiate, _strip
from bench.cli_errors import suggest as did_you_mean
from bench.results import code_fingerprint, semantic_config, steps_label
from bench.tune.space import Param, parse_space
from bench.tune.space import grid as grid_values
from bench.tuned import cell_of, relative_path

#: per-image metrics a study may optimise, and their direction
OBJECTIVES = {"psnr": "maximize", "ssim": "maximize", "lpips": "minimize", "consistency_psnr": "maximize"}
#: the score of a trial whose restoration diverged (NaN/inf output): the metric's worst end, so the sampler learns
#: to avoid the region (a failed trial would teach it nothing: TPE models complete and pruned trials only)
DIVERGED = {"psnr": 0.0, "ssim": 0.0, "lpips": 1.0, "consistency_psnr": 0.0}
LAUNCHERS = ("processes", "local", "slurm")
SAMPLERS = ("tpe", "grid")


@dataclass
class StudySpec:
    cell: dict                  # prior, task, method, steps
    base_overrides: list[str]   # the trial command without the searched values (dataset = the split)
    user_overrides: list[str]   # as given (for the preset's provenance)
    params: list[dict]          # Param fields
    official: dict              # the searched keys' values in the official config (may be null = per task)
    objective: str
    direction: str
    trials: int
    seed: int
    startup_trials: int
    sampler: str                # tpe | grid
    grid: dict                  # grid: the values per parameter ({} for tpe)
    prune: bool
    prune_after: int
    jobs: int
    launcher: str
    slurm: dict
    split: dict                 # dataset, split, images, ids, ids_sha256, manifest_sha256, forced_test_split
    results_root: str
    output: str
    code: dict
    name: str = ""
    identity_sha256: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return Path(self.results_root) / ".tune" / str(self.cell["prior"]) / self.name

    @property
    def journal(self) -> Path:
        return self.dir / "journal.log"

    @property
    def preset_path(self) -> Path:
        return Path(self.output) / relative_path(self.cell)

    def param_objects(self) -> list[Param]:
        return [Param(**{**p, "choices": tuple(p.get("choices", ()))}) for p in self.params]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> "StudySpec":
        return cls(**json.loads(text))


def _run_overrides(overrides: list[str]) -> list[str]:
    """The command line without its ``tune.*`` overrides (only the tool reads those)."""
    return [raw for raw in overrides if raw.split("=", 1)[0].lstrip("+~").split(".")[0] != "tune"]


def check(overrides: list[str]) -> tuple[dict, list[Param]]:
    """The command's config and search space, every ``tune.*`` value checked (no dataset is read)."""
    cfg = compose(overrides=overrides)
    c = OmegaConf.to_container(cfg, resolve=True)
    t = c["tune"]
    objective = str(t["objective"])
    if objective not in OBJECTIVES:
        hint = did_you_mean(objective, list(OBJECTIVES))
        raise ConfigError(f"tune.objective={objective!r} is not a per-image metric a study can optimise"
                          + (f" (did you mean {hint}?)" if hint else "") + f"; allowed: {', '.join(OBJECTIVES)}. "
                          "Fix: e.g. tune.objective=psnr")
    launcher = str(t["launcher"])
    if launcher not in LAUNCHERS:
        raise ConfigError(f"tune.launcher={launcher!r}; allowed: {', '.join(LAUNCHERS)}. Fix: tune.launcher=processes")
    if str(t["sampler"]) not in SAMPLERS:
        raise ConfigError(f"tune.sampler={t['sampler']!r}; allowed: {', '.join(SAMPLERS)}. Fix: tune.sampler=tpe")
    for key in ("trials", "jobs", "prune_after", "startup_trials", "grid"):
        v = t[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (0 if key == "startup_trials" else 1):
            raise ConfigError(f"tune.{key}={v!r} must be a positive integer. Fix: e.g. tune.{key}=4")
    if t["images"] is not None and (isinstance(t["images"], bool) or not isinstance(t["images"], int)
                                    or t["images"] < 1):
        raise ConfigError(f"tune.images={t['images']!r} must be null (the whole split) or a positive integer. "
                          "Fix: e.g. tune.images=4")
    params = parse_space(c["method"]["name"], (c.get("tune") or {}).get("space"), c["method"])
    return c, params


def build(overrides: list[str]) -> StudySpec:
    """Compose the cell, pick and check the split, parse the space: every input error before any trial."""
    c, params = check(overrides)
    t = c["tune"]
    objective, launcher = str(t["objective"]), str(t["launcher"])
    method = c["method"]["name"]
    run = _run_overrides(list(overrides))
    fixed = sorted({raw.split("=", 1)[0][len("method."):] for raw in run
                    if raw.split("=", 1)[0].lstrip("+~").startswith("method.")} & {p.name for p in params})
    if fixed:
        raise ConfigError(f"method.{fixed[0]} is set on the command line but also searched (tune.space.{fixed[0]}). "
                          f"Fix: drop the override to search it, or drop it from the space: '~tune.space.{fixed[0]}'")
    if cell_of(c)["prior"] is None:
        raise ConfigError(f"method={method} uses no prior: presets are keyed by prior, nothing to tune")

    # the split: tune.dataset if given; else the command's dataset itself when it is a validation split (or when
    # tune.allow_test_split forces it); else the validation split the (test) dataset names
    test_ds = c["dataset"]
    chosen = t.get("dataset")
    if chosen is None and test_ds.get("split") != "validation" and not t["allow_test_split"]:
        chosen = test_ds.get("validation")
        if not chosen:
            raise ConfigError(
                f"dataset={test_ds['name']} is a {test_ds.get('split', 'test')} split (dataset.split) and names no "
                "validation split: tuning on it would tune on the images the comparison is measured on. Fix: "
                "tune.dataset=<a dataset config with split: validation>; or dataset.split=validation if these "
                "images are held out from every test set; or force it with tune.allow_test_split=true (every run "
                "using the preset is then labelled 'TEST split, forced')")
    if chosen:
        run = [r for r in run if r.split("=", 1)[0] != "dataset"] + [f"dataset={chosen}"]
    base = run + ["tuned=official", "run.progress=false"]
    if t["images"] is not None:
        base.append(f"dataset.limit={int(t['images'])}")
    vcfg = compose(overrides=base)
    v = OmegaConf.to_container(vcfg, resolve=True)
    check_missing(v, OmegaConf.to_container(vcfg, resolve=False))
    check_dataset_options(v["dataset"])
    root = check_results_root(v["run"]["results_root"])
    split = str(v["dataset"].get("split", "test"))
    forced = split != "validation"
    if forced and not t["allow_test_split"]:
        raise ConfigError(
            f"dataset={v['dataset']['name']} is a {split} split (dataset.split={split}): tuning on it would tune on "
            "the images the comparison is measured on. Fix: tune on a validation split (tune.dataset=<name>; "
            f"dataset={test_ds['name']} names {test_ds.get('validation')!r}), or force it with "
            "tune.allow_test_split=true (every run using the preset is then labelled 'TEST split, forced')")
    dataset = _instantiate(_strip(v["dataset"], "name", "split", "validation"))
    dataset.check_files(progress=False)
    ids = [e.id for e in dataset.entries]
    if not ids:
        raise ConfigError(f"dataset={v['dataset']['name']} has no image to tune on. Fix: check dataset.root")
    man = dataset.manifest()
    official = {}
    for p in params:
        node = v["method"]
        for part in p.name.split("."):
            node = node[part]
        official[p.name] = node
    code = code_fingerprint()
    sem = semantic_config(v)
    for p in params:  # the searched keys do not identify the study, everything else does
        node = sem["method"]
        parts = p.name.split(".")
        for part in parts[:-1]:
            node = node[part]
        node.pop(parts[-1], None)
    ids_sha = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    spec = StudySpec(
        cell=cell_of(v), base_overrides=base, user_overrides=list(overrides),
        params=[{"name": p.name, "low": p.low, "high": p.high, "log": p.log, "integer": p.integer,
                 "choices": list(p.choices)} for p in params],
        official=official, objective=objective, direction=OBJECTIVES[objective], trials=int(t["trials"]),
        seed=int(t["seed"]), startup_trials=int(t["startup_trials"]), sampler=str(t["sampler"]),
        grid=grid_values(params, int(t["grid"])) if str(t["sampler"]) == "grid" else {},
        prune=bool(t["prune"]) and str(t["sampler"]) != "grid",  # a scan is complete: no pruning
        prune_after=int(t["prune_after"]), jobs=int(t["jobs"]), launcher=launcher, slurm=dict(t["slurm"] or {}),
        split={"dataset": v["dataset"]["name"], "split": split, "images": len(ids), "ids": ids,
               "ids_sha256": ids_sha, "manifest_sha256": man["sha256"], "forced_test_split": forced},
        results_root=str(root), output=str(t["output"]), code=code,
    )
    ident = {"config": sem, "dataset": man["sha256"], "ids": ids_sha, "code": code["fingerprint"],
             "tool": {k: getattr(spec, k) for k in ("params", "objective", "seed", "startup_trials", "prune",
                                                      "prune_after")}
             | ({"sampler": "grid", "grid": spec.grid} if spec.sampler == "grid" else {})}
    spec.identity_sha256 = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()
    if spec.sampler == "grid":
        spec.trials = 1
        for values in spec.grid.values():
            spec.trials *= len(values)
    spec.name = f"{spec.cell['method']}-{spec.cell['task']}-{steps_label(spec.cell['steps'])}-{spec.identity_sha256[:8]}"
    return spec
