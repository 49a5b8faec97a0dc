"""Command-line overrides checked before Hydra runs: errors that name the bad value and suggest the fix.

Hydra reports a misspelt key with advice that is wrong for a typo ("To append to your config use
+method.etta=0.5"), a misspelt group option without a "did you mean", a value its lexer rejects as a bare
``LexerNoViableAltException``, and a bad value in a sweep only when that job starts. :func:`checked` wraps
the Hydra main of :mod:`bench.cli`: it checks ``sys.argv`` first and exits 2 with one paragraph per problem,
before Hydra creates any directory or launches any job.

* **The happy path**: every group choice, each value of a group sweep too (``-m method=ddrm,gdp_x0``), is
  looked up in the group's options (0.03 s). A command that also sets keys (``dataset.limit=3``, ``+x=1``,
  ``~x``) is composed once more with Hydra's compose API, which accepts exactly what Hydra's main accepts (a
  sweep by its first value; each value of a group sweep whose group's keys a plain override sets, as in
  ``-m method=ddrm,bicubic method.eta=0.5``): 0.1 s of CPU more on a 2.5 s start.
* **Only a failure is diagnosed**: group options and keys are looked up in a config composed without the
  plain key overrides, and ``difflib`` finds the closest names. What the diagnosis cannot explain is left to
  Hydra (its usual message), as are ``--help``, ``--info``, ``-sc`` (shell completion) and ``-cp/-cd``.

:func:`problems` serves ``bench.api.compose`` too (a ValueError with the same text).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import re
import shlex
import sys
from collections.abc import Callable, Sequence

QUOTING = ("docs/usage.md \"Quoting\": a value with more than ASCII letters, digits, spaces and / . _ - + : @ needs "
           "Hydra's quotes inside the shell's")
GRAMMAR = "https://hydra.cc/docs/1.2/advanced/override_grammar/basic"


class _Defer(Exception):
    """The command is left to Hydra as it is (a flag we do not check, an argument Hydra's parser rejects)."""


def checked(hydra_main: Callable) -> Callable:
    """Decorates the ``@hydra.main`` function: a command line with problems exits 2 before Hydra starts."""

    @functools.wraps(hydra_main)
    def main(cfg_passthrough=None):
        if cfg_passthrough is None:
            found = command_line_problems(sys.argv[1:])
            if found:
                print("\n".join(f"error: {p}" for p in found), file=sys.stderr)
                sys.exit(2)
        return hydra_main(cfg_passthrough)

    return main


def command_line_problems(argv: Sequence[str]) -> list[str]:
    """The problems of the overrides on a ``bench`` command line (Hydra's own flags parsed as Hydra does)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    parser.exit_on_error = False
    parser.error = _defer  # argparse would print and exit: Hydra will, with its own usage line
    try:
        args, unknown = parser.parse_known_args(list(argv))
    except (_Defer, argparse.ArgumentError):
        return []
    if (unknown or args.help or args.hydra_help or args.shell_completion or args.info or args.config_path
            or args.config_dir or args.experimental_rerun or not args.overrides):
        return []
    return problems(args.overrides, config_name=args.config_name or "config")


def _defer(message: str):
    raise _Defer(message)


def problems(overrides: Sequence[str], *, config_name: str = "config", conf_dir: str | None = None,
             shell: bool = True) -> list[str]:
    """One paragraph per problem of ``overrides``; [] when Hydra composes them (or we cannot tell why not).
    ``shell``: the fixes are written for a shell (``bench ...``) rather than a Python list of strings."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    found = _parse_problems(overrides, shell)
    if found or GlobalHydra.instance().is_initialized():  # inside a Hydra app: compose() would refuse
        return found
    if conf_dir is None:
        from bench.paths import conf_dir as default_conf_dir

        conf_dir = default_conf_dir()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), job_name="bench", version_base="1.3"):
            return _Check(list(overrides), config_name).run()
    except _Defer:
        return []


def _parse_problems(overrides: Sequence[str], shell: bool) -> list[str]:
    """Arguments Hydra's override lexer/parser rejects, with the quoted form to copy. Bare words after a
    ``key=value`` (a value with spaces the shell split) are joined back into that value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    bad = []
    for raw in overrides:
        try:
            parser.parse_override(raw)
        except Exception as err:  # HydraException, wrapping the ANTLR error
            bad.append((raw, str(err)))
    if not bad:
        return []
    why = dict(bad)
    out, i, args = [], 0, list(overrides)
    while i < len(args):
        raw, j = args[i], i + 1
        while j < len(args) and args[j] in why and "=" not in args[j] and args[j][:1] not in "~+":
            j += 1  # bare words after this argument
        words = args[i + 1:j]
        if words and "=" in raw and raw[:1] != "~":
            out.append(_split_value_problem(raw, words, shell))
        elif raw in why:
            out.append(_parse_problem(raw, why[raw], shell))
            j = i + 1
        i = j
    return out


def _split_value_problem(raw: str, words: list[str], shell: bool) -> str:
    key, value = raw.split("=", 1)
    joined = " ".join([value, *words])
    fix = _quoted(key, joined, shell)
    pieces = " ".join(repr(w) for w in words)
    msg = (f"Hydra cannot parse {pieces}: not overrides but the rest of the value of {raw!r}, which the shell "
           "split at spaces.")
    return msg + (f" Fix: quote the whole override, Hydra's quotes inside the shell's: {fix}\n({QUOTING}.)"
                  if fix else f" Fix: quote the whole override ({QUOTING}).")


def _parse_problem(raw: str, why: str, shell: bool) -> str:
    if "=" not in raw and raw[:1] != "~":
        return (f"{raw!r} is not an override ({why}): write key=value (e.g. method=ddrm), +key=value to add a "
                "key, ~key to delete one.")
    key, value = raw.split("=", 1) if "=" in raw else (raw, "")
    fix = None if re.match(r"\s*([\[{(]|\w+\()|.*\$\{", value) else _quoted(key, value, shell)
    msg = f"Hydra cannot parse the override {raw!r} ({why})."
    if fix is None:
        return f"{msg} Fix: see the override grammar, {GRAMMAR} ({QUOTING})."
    inside = "the shell's" if shell else "the Python string"
    return f"{msg} Fix: quote the value, Hydra's quotes inside {inside}: {fix}\n({QUOTING}.)"


def _quoted(key: str, value: str, shell: bool) -> str | None:
    """``key="value"`` in Hydra's quotes, inside the shell's (or as a Python string), when Hydra parses it
    back to ``value``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    q = "'" if '"' in value and "'" not in value else '"'
    fixed = f"{key}={q}{value.replace(q, chr(92) + q)}{q}"
    try:
        if OverridesParser.create().parse_override(fixed).value() != value:
            return None
    except Exception:  # noqa: BLE001 - any parse failure: no fix to offer
        return None
    return shlex.quote(fixed) if shell else repr(fixed)


def suggest(name: str, candidates: Sequence[str]) -> str | None:
    """The closest of ``candidates`` to ``name`` (difflib, case-insensitive), or None."""
    lower = {c.lower(): c for c in candidates}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def reject_unknown_keys(label: str, mapping, allowed: Sequence[str]) -> None:
    """Raise ``ValueError("<label>: unknown key(s) [...]; allowed: [...]")`` when ``mapping`` has keys outside
    ``allowed``, each unknown key with its closest allowed one ("did you mean")."""
    unknown = sorted(set(mapping) - set(allowed))
    if unknown:
        hints = [f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, list(allowed), 1)) else k
                 for k in unknown]
        raise ValueError(f"{label}: unknown key(s) {hints}; allowed: {list(allowed)}")


class _Check:
    """Composes the overrides (inside an initialized Hydra) and, if that fails, finds out why."""

    def __init__(self, overrides: list[str], config_name: str):
        from hydra.core.global_hydra import GlobalHydra
        from hydra.errors import HydraException
        from hydra.core.override_parser.overrides_parser import OverridesParser

        self.raws, self.config_name = overrides, config_name
        self.loader = GlobalHydra.instance().config_loader()
        self.parsed = OverridesParser.create(config_loader=self.loader).parse_overrides(overrides)
        # one repository for every look-up (the loader's public get_group_options builds one per call, 20 ms
        # each); it includes the search path added by hydra.searchpath / bench.api's config_dirs
        try:
            _, self.repo = self.loader._parse_overrides_and_create_caching_repo(config_name, overrides)
        except HydraException as err:  # e.g. -cn of a config that does not exist: Hydra says so
            raise _Defer(str(err)) from None
        self.groups = self._all_groups("")
        self.cell = ""  # the sweep cell being diagnosed, when it is not the first

    def run(self) -> list[str]:
        sweeps = {i: self._sweep_values(o) for i, o in enumerate(self.parsed) if o.is_sweep_override()}
        found = [p for i, o in enumerate(self.parsed) if self._is_group(o)
                 for p in [self._option_problem(i, o, sweeps.get(i))] if p]
        if found or all(self._is_group(o) for o in self.parsed):
            return found  # group choices only: their options were the whole question
        first = [self._cell(i, vs[0]) if (vs := sweeps.get(i)) else raw for i, raw in enumerate(self.raws)]
        for cell, label in self._cells(first, sweeps):
            try:
                self._compose(cell)
            except Exception:  # noqa: BLE001 - whatever Hydra raises, the diagnosis below says why
                self.cell = label
                return [f"in the sweep's cell {label}: {p}" if label else p for p in self._diagnose(cell)]
        return []

    # ---------------------------------------------------------------------------------------- helpers
    def _compose(self, overrides: list[str]):
        from hydra import compose

        return compose(config_name=self.config_name, overrides=overrides, return_hydra_config=True)

    def _all_groups(self, parent: str) -> list[str]:
        from hydra.core.object_type import ObjectType

        out = []
        for g in self.repo.get_group_options(parent, ObjectType.GROUP):
            path = f"{parent}/{g}" if parent else g
            out += [path, *self._all_groups(path)]
        return out

    def _is_group(self, o) -> bool:
        return o.key_or_group in self.groups and not o.is_delete()

    @staticmethod
    def _sweep_values(o) -> list[str]:
        try:
            return list(o.sweep_string_iterator())
        except Exception as err:  # an interval sweep (an optimizer's), a glob of a non-group: Hydra's job
            raise _Defer(str(err)) from None

    def _cell(self, i: int, value: str) -> str:
        return f"{self.parsed[i].get_key_element()}={value}"

    def _cells(self, first: list[str], sweeps: dict):
        """The first cell, then every value of a group sweep whose group a plain key override sets."""
        yield first, ""
        keyed = {o.key_or_group.split(".")[0] for o in self.parsed if o.key_or_group not in self.groups}
        for i, vs in sweeps.items():
            o = self.parsed[i]
            if self._is_group(o) and o.key_or_group in keyed:
                for v in vs[1:]:
                    cell = list(first)
                    cell[i] = self._cell(i, v)
                    yield cell, f"{o.key_or_group}={v}"

    def _option_problem(self, i: int, o, sweep: list[str] | None) -> str | None:
        from hydra.core.object_type import ObjectType

        group = o.key_or_group
        options = self.repo.get_group_options(group, ObjectType.CONFIG)
        value = o.value() if sweep is None else None
        values = sweep or (value if isinstance(value, list) else [] if value is None else [value])
        bad = [v for v in map(str, values) if v not in options]
        if not bad:
            return None
        listing = f"Available options in '{group}':\n" + "\n".join(f"\t{x}" for x in options)
        best = suggest(bad[0], options)
        if best is None:
            return f"unknown option {bad[0]!r} for {group!r} (in {self.raws[i]}); pick one of them.\n{listing}"
        fixed = ",".join(dict.fromkeys(best if v == bad[0] else v for v in map(str, values)))
        fixed = f"[{fixed}]" if isinstance(value, list) else fixed
        return (f"unknown option {bad[0]!r} for {group!r}; did you mean {best!r}? "
                f"Fix: {o.get_key_element()}={fixed}\n{listing}")

    # -------------------------------------------------------------------------------------- diagnosis
    def _diagnose(self, cell: list[str]) -> list[str]:
        """Why ``cell`` did not compose: its key overrides against the config of its group overrides."""
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        parsed = OverridesParser.create().parse_overrides(cell)
        try:  # the search path too: groups may come from the folders it adds (bench.api's config_dirs)
            base = self._compose([raw for raw, o in zip(cell, parsed)
                                  if self._is_group(o) or o.key_or_group == "hydra.searchpath"])
        except Exception as err:  # noqa: BLE001 - the group overrides alone fail: Hydra says why
            raise _Defer(str(err)) from None
        choices = dict(base.hydra.runtime.choices)
        base = OmegaConf.to_container(base, resolve=False)  # mandatory ??? and ${...} values as they are
        found, added = [], []
        for raw, o in zip(self.raws, parsed):  # the command's own words: a sweep is fixed as a whole
            if self._is_group(o):
                continue
            key = o.key_or_group
            known = _exists(base, key) or any(key == a or key.startswith(a + ".") for a in added)
            if o.is_add() and known:
                found.append(f"{key!r} is in the config already, so {raw} cannot add it. "
                             f"Fix: {raw[1:]} (or +{raw} to add or override)")
            elif o.is_add() or o.is_force_add():
                added.append(key)
            elif not known:
                found.append(self._key_problem(base, choices, raw, o))
        return found

    def _key_problem(self, base, choices: dict, raw: str, o) -> str:
        key, value = o.key_or_group, raw.split("=", 1)[1] if "=" in raw else None
        prefix = "~" if o.is_delete() else ""
        if "/" in key:  # a config group's path (hydra/launcher=...)
            best = suggest(key, self.groups)
            head = f"unknown config group {key!r}"
            if best is None:
                return f"{head} (in {raw}). The config groups: {', '.join(self.groups)}."
            return f"{head}; did you mean {best!r}? Fix: {self._fixed(best, value, prefix, choices)}"
        parts = key.split(".")
        node, depth = base, 0
        while depth < len(parts) and isinstance(node, dict) and parts[depth] in node:
            node, depth = node[parts[depth]], depth + 1
        if not isinstance(node, dict) or depth == len(parts):
            raise _Defer(f"{'.'.join(parts[:depth])} is a value")
        where, seg = ".".join(parts[:depth]), parts[depth]
        keys = [str(k) for k in node]
        if not where:  # the top level: its keys and the config groups one selects with group=option
            keys = list(dict.fromkeys(keys + [g for g in self.groups if "/" not in g]))
        best = suggest(seg, keys)
        what = "cannot delete" if o.is_delete() else "unknown key"
        if best is not None:
            name = ".".join([*parts[:depth], best, *parts[depth + 1:]])
            return f"{what} {key!r}; did you mean {name!r}? Fix: {self._fixed(name, value, prefix, choices)}"
        if not where:  # the top level: its keys, and the config groups one selects with group=option
            groups = [g for g in keys if g in self.groups and g != "hydra"]
            listed = (f"the top level of the config has the keys {', '.join(k for k in keys if k not in groups)} "
                      f"and the config groups {', '.join(g if g in choices else '+' + g for g in groups)} "
                      "(group=option)")
        else:
            listed = f"{where!r} has the keys {', '.join(keys)}"
        if o.is_delete():
            return f"{what} {key!r} (in {raw}): no such key; {listed}."
        if self.cell:  # the key exists in the sweep's first cell, not in this one
            return (f"{raw} sets a key that is not there: {listed}. Fix: sweep the cells that lack it in a "
                    "separate command.")
        return f"{what} {key!r} (in {raw}): {listed}. Fix: one of those, or +{key}={value} to add a new key."

    def _fixed(self, name: str, value: str | None, prefix: str, choices: dict) -> str:
        """The corrected override; a group the defaults do not select is added with ``+``."""
        if name in self.groups and not prefix and name not in choices:
            prefix = "+"
        return f"{prefix}{name}" + ("" if value is None else f"={value}")


def _exists(cfg: dict, key: str) -> bool:
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True
