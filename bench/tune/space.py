"""A method's search space: the ``tune.space`` block of its YAML (``conf/method/<name>.yaml``).

Each entry names a key of the method's node (``method.<key>``, dotted for nested keys) and its range::

    tune:
      space:
        eta: {low: 0.0, high: 1.0}                  # a float, uniform
        scale: {low: 0.01, high: 10.0, log: true}   # a float, log-uniform
        travel_length: {low: 1, high: 10, int: true}  # an integer (log: true allowed too)
        denoise_term_weight: {choices: [linear, sqrt]}  # categorical

:func:`parse_space` checks every entry against the method's composed node before any trial runs (a key the
method does not have is an error naming the allowed keys); :func:`suggest` draws one trial's values from an
optuna trial; :func:`overrides` turns values into Hydra overrides for the ordinary run path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bench.api import _value as hydra_value
from bench.cli_errors import suggest as did_you_mean

#: method keys a search space may not name: they identify the cell, not a setting of the method
NOT_TUNABLE = ("_target_", "name", "model", "steps")
_ALLOWED_FIELDS = {"low", "high", "log", "int", "choices"}


class SpaceError(ValueError):
    """A search space entry that cannot be searched (named, with the fix)."""


@dataclass(frozen=True)
class Param:
    """One searched parameter: ``method.<name>``."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = field(default_factory=tuple)

    @property
    def categorical(self) -> bool:
        return bool(self.choices)

    def describe(self) -> dict:
        if self.categorical:
            return {"choices": list(self.choices)}
        out = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.integer:
            out["int"] = True
        return out

    def contains(self, value) -> bool:
        if self.categorical:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return self.low <= value <= self.high


def _lookup(node: dict, dotted: str):
    cur = node
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def _tunable_keys(method: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in method.items():
        if not prefix and k in NOT_TUNABLE:
            continue
        if isinstance(v, dict):
            keys += _tunable_keys(v, f"{prefix}{k}.")
        else:
            keys.append(f"{prefix}{k}")
    return keys


def _number(method_name: str, key: str, what: str, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"tune.space.{key}.{what}={value!r} of method={method_name} is not a finite number. "
                         f"Fix: e.g. {{low: 0.1, high: 10.0, log: true}} in conf/method/{method_name}.yaml")
    return value


def parse_entry(method_name: str, key: str, spec) -> Param:
    where = f"conf/method/{method_name}.yaml"
    if not isinstance(spec, dict):
        raise SpaceError(f"tune.space.{key}={spec!r} of method={method_name} is not a range. Fix: write "
                         f"{{low: L, high: H}} (optionally log: true, int: true) or {{choices: [a, b]}} in {where}")
    unknown = sorted(set(spec) - _ALLOWED_FIELDS)
    if unknown:
        raise SpaceError(f"tune.space.{key} of method={method_name} has unknown field(s) {unknown}; allowed: "
                         f"{sorted(_ALLOWED_FIELDS)}. Fix: {where}")
    if "choices" in spec:
        if set(spec) != {"choices"}:
            raise SpaceError(f"tune.space.{key} of method={method_name} mixes choices with a range. Fix: one "
                             f"of {{choices: [...]}} or {{low: L, high: H}} in {where}")
        choices = spec["choices"]
        if not isinstance(choices, list) or len(choices) < 2 or len(set(map(repr, choices))) != len(choices):
            raise SpaceError(f"tune.space.{key}.choices={choices!r} of method={method_name} must be a list of at "
                             f"least two distinct values. Fix: {where}")
        return Param(key, choices=tuple(choices))
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"tune.space.{key} of method={method_name} needs both low and high (has "
                         f"{sorted(spec)}). Fix: {{low: L, high: H}} in {where}")
    low = _number(method_name, key, "low", spec["low"])
    high = _number(method_name, key, "high", spec["high"])
    log, integer = bool(spec.get("log", False)), bool(spec.get("int", False))
    if not low < high:
        raise SpaceError(f"tune.space.{key} of method={method_name}: low={low} is not below high={high}. "
                         f"Fix: {where}")
    if log and low <= 0:
        raise SpaceError(f"tune.space.{key} of method={method_name}: log: true needs low > 0 (low={low}). "
                         f"Fix: a positive low, or drop log, in {where}")
    if integer:
        if int(low) != low or int(high) != high:
            raise SpaceError(f"tune.space.{key} of method={method_name}: int: true needs integer bounds "
                             f"(low={low}, high={high}). Fix: {where}")
        low, high = int(low), int(high)
    else:
        low, high = float(low), float(high)
    return Param(key, low, high, log, integer)


def parse_space(method_name: str, space: dict | None, method: dict) -> list[Param]:
    """The checked parameters of ``space`` for the composed ``method`` node (sorted by name)."""
    if not space:
        raise SpaceError(f"method={method_name} has no tune.space: it has no hyper-parameter to tune (or none "
                         f"declared). Fix: add a tune.space block to conf/method/{method_name}.yaml "
                         "(docs/tuning.md), or pick a method that has one")
    params = []
    keys = _tunable_keys(method)
    for key in sorted(space):
        try:
            _lookup(method, key)
        except KeyError:
            hint = did_you_mean(key, keys)
            raise SpaceError(
                f"tune.space.{key}: method={method_name} has no parameter method.{key}"
                + (f" (did you mean {hint}?)" if hint else "")
                + f"; its parameters: {', '.join(keys)}. Fix: name one of them in conf/method/{method_name}.yaml "
                "or in the tune.space override") from None
        if key.split(".")[0] in NOT_TUNABLE:
            raise SpaceError(f"tune.space.{key}: method.{key} identifies the cell and is not a hyper-parameter "
                             f"(not tunable: {', '.join(NOT_TUNABLE)}). Fix: remove it; the step budget is "
                             "set with steps=N")
        params.append(parse_entry(method_name, key, space[key]))
    return params


def suggest(trial, params: list[Param]) -> dict:
    """One trial's values (optuna's ``suggest_*``; the names are the method keys)."""
    out = {}
    for p in params:
        if p.categorical:
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif p.integer:
            out[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        else:
            out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
    return out


def overrides(values: dict) -> list[str]:
    """``method.<key>=<value>`` Hydra overrides for the run path."""
    return [f"method.{k}={hydra_value(v)}" for k, v in sorted(values.items())]


def grid(params: list[Param], points: int) -> dict:
    """Every parameter's grid values: ``points`` of its range (geometric for log ranges, integers rounded and
    deduplicated), its choices for a categorical one (optuna's GridSampler search space)."""
    import numpy as np

    out = {}
    for p in params:
        if p.categorical:
            out[p.name] = list(p.choices)
            continue
        vals = (np.geomspace if p.log else np.linspace)(p.low, p.high, points)
        out[p.name] = sorted({int(round(v)) for v in vals}) if p.integer else [float(v) for v in vals]
    return out
