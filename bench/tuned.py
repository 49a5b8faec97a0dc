"""Tuned presets: the hyper-parameters ``python -m bench.tune`` found for one (prior, task, method, steps) cell.

A preset is a YAML file ``<dir>/<prior>/<task>/<method>-<steps>.yaml`` (``steps`` as the run directory's
prefix: ``steps20``, or ``default`` for a method whose step count is per task)::

    cell: {prior: adm64_imagenet96, task: deblur_gauss, method: dps, steps: 20}
    values: {scale: 0.41}            # method.<key>: value
    provenance:                      # written by bench.tune (bench/tune/preset.py)
      split: {dataset: sample_val, split: validation, images: 4, ids_sha256: ..., forced_test_split: false}
      trials: 8
      objective: psnr
      ...

The config key ``tuned`` says which settings a run uses (conf/config.yaml): ``official`` (the method's YAML),
``auto`` (the matching preset in ``<run.results_root>/tuned/``, else in the shipped ``tuned/``, else
official) or a preset's path. :func:`apply` merges the preset's values into the resolved config before the
run identity is computed and replaces ``tuned`` by a record of the preset (its sha256, split, trials), so a
tuned run never shares a run directory with an official one, and the manifest says what was applied. A key
set on the command line (``method.scale=0.5``) wins over the preset, and the record lists it.

This module is runtime (``python -m bench`` applies presets); writing them is tooling (:mod:`bench.tune`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.models.assets import sha256_file
from bench.notices import notice
from bench.paths import tuned_dir
from bench.results import steps_label

RESULTS_DIR_NAME = "tuned"  # <results_root>/tuned/: bench.tune's default output
MODES = ("official", "auto")


class PresetError(ValueError):
    """A ``tuned=`` value or a preset file that cannot be applied (named, with the fix)."""


def prior_name(method: dict) -> str | None:
    """The prior a method's settings depend on: the diffusion model's name, or DGP's generator / SRLDM's
    latent model source; None for a prior-free method (bicubic)."""
    if isinstance(method.get("model"), dict):
        return str(method["model"]["name"])
    if isinstance(method.get("generator"), dict):
        return f"biggan-{method['generator'].get('source')}"
    if isinstance(method.get("ldm"), dict):
        return f"ldm-{method['ldm'].get('source')}"
    return None


def cell_of(c: dict) -> dict:
    """The (prior, task, method, steps) a resolved config's preset is keyed by."""
    return {"prior": prior_name(c["method"]), "task": c["task"]["name"], "method": c["method"]["name"],
            "steps": c["method"].get("steps")}


def relative_path(cell: dict) -> Path:
    return Path(str(cell["prior"])) / str(cell["task"]) / f"{cell['method']}-{steps_label(cell['steps'])}.yaml"


def search_dirs(results_root: str | Path) -> list[Path]:
    """Where ``tuned=auto`` looks, first match wins: this results root's studies, then the shipped presets."""
    return [Path(results_root) / RESULTS_DIR_NAME, tuned_dir()]


def find(c: dict) -> Path | None:
    if cell_of(c)["prior"] is None:
        return None
    rel = relative_path(cell_of(c))
    for d in search_dirs(c["run"]["results_root"]):
        if (d / rel).is_file():
            return d / rel
    return None


def load(path: Path) -> dict:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise PresetError(f"tuned={path}: cannot read the preset ({err}). Fix: point tuned= at a preset written "
                          "by python -m bench.tune, or use tuned=official") from None
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict) or not isinstance(
            data.get("cell"), dict):
        raise PresetError(f"tuned={path}: not a preset (needs the keys cell and values). Fix: point tuned= at a "
                          "file written by python -m bench.tune, or use tuned=official")
    return data


def overridden_keys(overrides) -> set[str]:
    """``method.<key>`` names set by command-line overrides (``method.scale=0.5``, ``+method.x=1``)."""
    keys = set()
    for raw in overrides or ():
        key = str(raw).split("=", 1)[0].lstrip("+~")
        if key.startswith("method."):
            keys.add(key[len("method."):])
    return keys


def _set(node: dict, dotted: str, value) -> bool:
    parts = dotted.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            return False
        node = node[p]
    if parts[-1] not in node:
        return False
    node[parts[-1]] = value
    return True


def label(record) -> str:
    """How a report row says where its settings came from."""
    if not isinstance(record, dict):
        return "official settings"
    split = record.get("split") or {}
    forced = " (TEST split, forced)" if split.get("forced_test_split") else ""
    return f"tuned on {split.get('dataset', '?')}{forced} ({record.get('trials', '?')} trials)"


def apply(c: dict, overrides=()) -> str | None:
    """Resolve ``c["tuned"]`` in place (see the module docstring). Returns a line for the run log, or None
    when the run uses official settings because ``tuned=official``."""
    mode = c.get("tuned", "official")
    if mode in (None, "official"):
        c["tuned"] = "official"
        return None
    if not isinstance(mode, str):
        raise PresetError(f"tuned={mode!r} is not one of {', '.join(MODES)} or a preset path. Fix: tuned=auto")
    cell = cell_of(c)
    if mode == "auto":
        path = find(c)
        if path is None:
            c["tuned"] = "official"
            if cell["prior"] is not None and c["tune"].get("space"):
                notice(f"tuned=auto: no tuned preset for {cell['method']} x {cell['task']} at "
                       f"{steps_label(cell['steps'])} with prior {cell['prior']} (looked for "
                       f"{relative_path(cell)} in {', '.join(str(d) for d in search_dirs(c['run']['results_root']))}); "
                       "running the official settings. Tune one: python -m bench.tune (docs/tuning.md)")
            return None
    else:
        path = Path(mode).expanduser()
        if not path.is_file():
            raise PresetError(f"tuned={mode!r}: no such preset file, and not one of {', '.join(MODES)}. Fix: "
                              "tuned=auto (the preset matching the cell), tuned=official, or the path of a "
                              "preset written by python -m bench.tune")
    data = load(path)
    if {k: data["cell"].get(k) for k in cell} != cell:
        raise PresetError(f"tuned={path}: the preset is for {data['cell']}, this run is {cell}. Fix: tuned=auto "
                          "picks the matching preset, or tune this cell with python -m bench.tune")
    skip = overridden_keys(overrides)
    applied = {}
    for key, value in sorted(data["values"].items()):
        if key in skip:
            continue
        if not _set(c["method"], key, value):
            raise PresetError(f"tuned={path}: method {cell['method']} has no parameter method.{key}. Fix: retune "
                              "the cell (python -m bench.tune) or use tuned=official")
        applied[key] = value
    if not applied:
        c["tuned"] = "official"
        return f"settings: official (every value of the preset {path} is set on the command line)"
    prov = data.get("provenance") or {}
    c["tuned"] = {"path": str(path), "sha256": sha256_file(path), "values": applied,
                  "overridden_by_command_line": sorted(skip & set(data["values"])),
                  "split": prov.get("split"), "trials": prov.get("trials"), "objective": prov.get("objective"),
                  "validation_value": prov.get("value")}
    msg = f"settings: {label(c['tuned'])}: {applied} from {path}"
    if c["tuned"]["overridden_by_command_line"]:
        msg += f"; set on the command line instead: {c['tuned']['overridden_by_command_line']}"
    return msg
