"""The preset file a study ends with (read by :mod:`bench.tuned` when a run uses ``tuned=auto``)."""

from __future__ import annotations

import datetime
import shlex

import yaml

from bench.imageio import atomic_write_bytes
from bench.provenance import git_info
from bench.tune.spec import StudySpec


def document(spec: StudySpec, result: dict) -> dict:
    split = {k: spec.split[k] for k in ("dataset", "split", "images", "ids_sha256", "manifest_sha256",
                                        "forced_test_split")}
    git = git_info() or {}
    return {
        "cell": dict(spec.cell),
        "values": dict(result["values"]),
        "provenance": {
            "study": spec.name,
            "storage": str(spec.journal),
            "command": shlex.join(["python", "-m", "bench.tune", *spec.user_overrides]),
            "chosen": result["from"],
            "objective": f"{spec.objective} ({spec.direction}, mean over the split's images)",
            "value": round(float(result["value"]), 6),
            "official_value": (None if result["official_value"] is None  # the method skips the cell officially
                               else round(float(result["official_value"]), 6)),
            "trials": result["complete"] + result["pruned"],
            "complete": result["complete"], "pruned": result["pruned"], "failed": result["failed"],
            "trial_seconds": result["trial_seconds"],
            "sampler": ({"name": "grid", "grid": spec.grid, "workers": spec.jobs} if spec.sampler == "grid"
                        else {"name": "TPESampler", "seed": spec.seed, "startup_trials": spec.startup_trials,
                              "workers": spec.jobs}),
            "pruning": ({"pruner": "MedianPruner", "after_images": spec.prune_after} if spec.prune else None),
            "space": {p["name"]: ({"choices": p["choices"]} if p["choices"] else
                                  {"low": p["low"], "high": p["high"], "log": p["log"], "int": p["integer"]})
                      for p in spec.params},
            "official": dict(spec.official),
            "split": split,
            "ids": list(spec.split["ids"]),
            "code": {"fingerprint": spec.code["fingerprint"], "git": git.get("commit"), "dirty": git.get("dirty")},
            "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        },
    }


def write(spec: StudySpec, result: dict) -> dict:
    doc = document(spec, result)
    head = ("# Tuned preset written by python -m bench.tune (docs/tuning.md). Applied by tuned=auto to runs of\n"
            f"# {spec.cell}. Edit nothing: the file's sha256 enters the identity of every run that uses it.\n")
    path = spec.preset_path
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, (head + yaml.safe_dump(doc, sort_keys=False, width=110)).encode())
    return doc
