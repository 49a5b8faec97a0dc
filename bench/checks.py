"""Up-front checks of a run's values (CLI layer, before any directory is created), the errors they raise,
and the per-run log file.

Each check raises :class:`ConfigError` with one paragraph: the key and its value, what is allowed, and the
fix. Storage failures during a run (disk full, read-only, a path under a file) become :class:`StorageError`
with the path and the fix. Values arrive as the plain resolved config (``OmegaConf.to_container``), except
:func:`check_missing`, which needs the unresolved text to name the environment variable that would fill a
``${oc.env:VAR,???}`` default.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import sys
from pathlib import Path

from bench.provenance import now_iso

MISSING = "???"


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key, the value, the allowed set and the fix."""


class StorageError(Exception):
    """The results folder cannot be written (full, read-only, no permission, under a file)."""


def _walk(node, prefix: str = ""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _walk(v, f"{prefix}{k}.")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk(v, f"{prefix}{i}.")
    else:
        yield prefix[:-1], node


def _lookup(node, dotted: str):
    for part in dotted.split("."):
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def check_missing(resolved: dict, raw: dict) -> None:
    """Mandatory values left at ``???`` (``dataset.root`` of dataset=folder, or ``${oc.env:VAR,???}`` with
    VAR unset): one error naming each key, its config group option and, where one exists, the variable."""
    missing = [key for key, value in _walk({k: v for k, v in resolved.items() if k != "hydra"})
               if value == MISSING]
    if not missing:
        return
    parts = []
    for key in missing:
        group = key.split(".", 1)[0]
        name = _lookup(resolved, f"{group}.name")
        hint = "/path/to/images" if key.endswith("root") else "<value>"
        env = re.search(r"oc\.env:\s*([A-Za-z_][A-Za-z0-9_]*)", str(_lookup(raw, key) or ""))
        where = f" for {group}={name}" if name and "." in key else ""
        also = f" or set the environment variable {env.group(1)}" if env else ""
        parts.append(f"{key} is required{where}; pass {key}={hint}{also}")
    raise ConfigError("; ".join(parts) + ". (A value with spaces or non-ASCII characters needs quotes, e.g. "
                      "'dataset.root=\"/data/my images\"'.)")


#: the config nodes the CLI instantiates, and what their files look like (docs/extending.md)
TARGETS = {
    "method": "a method file is `# @package _global_` (first line), a top-level `steps:` and "
              "`method: {_target_: package.module.Class, name: ..., <keyword arguments>}`",
    "task.operator": "a task file has `operator: {_target_: package.module.Class, <keyword arguments>}`",
    "dataset": "a dataset file has `_target_: package.module.Class`, `name:` and the keyword arguments",
}


def check_targets(c: dict) -> None:
    """Every node the CLI instantiates names its class. A method file whose ``# @package _global_`` header
    Hydra did not read (it must be the first line: a comment line before it ends Hydra's header parsing)
    lands under ``method:``, so ``method.method._target_`` exists and ``method._target_`` does not; without
    this check the run fails inside the user's class with ``unexpected keyword argument 'name'``."""
    for key, shape in TARGETS.items():
        node = _lookup(c, key)
        if not isinstance(node, dict) or "_target_" in node:
            continue
        group = key.split(".", 1)[0]
        inner = node.get(group)
        if group == "method" and isinstance(inner, dict) and "_target_" in inner:
            raise ConfigError(
                f"method: the method config has no _target_ but method.method has one "
                f"({inner['_target_']}): Hydra merged the method file under `method:` because it did not read "
                "its `# @package _global_` header. Hydra reads that header only at the very top of a file; any "
                "other comment line before it (e.g. `# file: ...`) turns it into an ordinary comment. Fix: make "
                f"`# @package _global_` the first line of your method/{inner.get('name', '<name>')}.yaml "
                "(comments go below it; docs/extending.md).")
        raise ConfigError(f"{key}: the config has no _target_ (keys: {sorted(node)}), so there is no class to "
                          f"build. Fix: {shape} (docs/extending.md).")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_run_options(run: dict) -> None:
    """``run.batch_size`` an integer >= 1 or ``auto``, ``run.num_workers`` >= 0, ``run.force`` a boolean."""
    bs = run.get("batch_size")
    if not (_is_int(bs) and bs >= 1) and bs != "auto":
        raise ConfigError(
            f"run.batch_size={bs!r} is not allowed: it must be an integer >= 1 (images per restore call) or "
            "auto (the largest batch that fits in free GPU memory, bench/batching.py; 4 on the CPU). Fix: e.g. "
            "run.batch_size=4 (lower it if memory runs out) or run.batch_size=auto."
        )
    nw = run.get("num_workers")
    if not _is_int(nw) or nw < 0:
        raise ConfigError(f"run.num_workers={nw!r} is not allowed: it must be an integer >= 0 (DataLoader "
                          "worker processes; 0 decodes in the main process). Fix: e.g. run.num_workers=0")
    if not isinstance(run.get("force", False), bool):
        raise ConfigError(f"run.force={run.get('force')!r} must be true or false. Fix: run.force=true "
                          "recomputes the cell (the old run is moved aside), run.force=false resumes it.")


def check_dataset_options(d: dict) -> None:
    """``dataset.limit`` null or >= 1; ``dataset.shard`` / ``dataset.num_shards`` integers."""
    limit = d.get("limit")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(
            f"dataset.limit={limit!r} is not allowed: it must be null (every image) or an integer >= 1 (the "
            f"first N images of dataset={d.get('name')}). Fix: e.g. dataset.limit=8, or dataset.limit=null."
        )
    for key in ("shard", "num_shards"):
        if key in d and not _is_int(d[key]):
            raise ConfigError(f"dataset.{key}={d[key]!r} must be an integer. Fix: e.g. dataset.num_shards=4 "
                              "dataset.shard=0 (0 <= shard < num_shards).")


def check_results_root(value) -> Path:
    """The resolved results root; an error (with the path and the fix) when it is a file, lies under a
    file, or its nearest existing folder is not writable. Creates nothing."""
    root = Path(str(value)).expanduser().resolve()
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        where = "is a file" if probe == root else f"lies under the file {str(probe)!r}"
        raise ConfigError(f"run.results_root={str(value)!r} {where}, so no results folder can be made there. "
                          "Fix: pass run.results_root=<a folder path> (or move that file).")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(
            f"run.results_root={str(value)!r}: {str(probe)!r} is not writable (read-only file system or no "
            "permission). Fix: pass run.results_root=<a writable folder>, or fix the folder's permissions."
        )
    return root


_STORAGE_FIXES = {
    errno.ENOSPC: ("the disk is full", "free space on it, or pass run.results_root=<a folder on another disk>"),
    errno.EDQUOT: ("the disk quota is exceeded", "free space, or pass run.results_root=<a folder elsewhere>"),
    errno.EROFS: ("the file system is read-only", "pass run.results_root=<a writable folder>"),
    errno.EACCES: ("permission denied", "pass run.results_root=<a writable folder> or fix the permissions"),
    errno.EPERM: ("operation not permitted", "pass run.results_root=<a writable folder> or fix the permissions"),
    errno.ENOTDIR: ("a part of the path is a file", "pass run.results_root=<a folder path>"),
}


def storage_error(err: OSError, where: Path) -> StorageError | None:
    """A :class:`StorageError` for a write failure the user can fix (None for other OSErrors)."""
    if err.errno not in _STORAGE_FIXES:
        return None
    what, fix = _STORAGE_FIXES[err.errno]
    path = err.filename or where
    return StorageError(f"cannot write {str(path)!r}: {what} ({err.strerror}). Images finished before this "
                        f"are kept. Fix: {fix}; then rerun the same command to resume.")


class RunLog:
    """``<run>/run.log``: every line is printed and appended there (host, pid, time). Lines noted before the
    run directory exists are held and written when it does, so a run that fails before its first write
    leaves no directory behind. While attached, the ``bench`` loggers' records go there too."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._held: list[str] = []
        self._handler: logging.Handler | None = None
        self._tag = f"{socket.gethostname()}:{os.getpid()}"
        self._broken = False

    def note(self, msg: str, *, echo: bool = True, err: bool = False) -> None:
        if echo:
            print(f"[bench] {msg}", file=sys.stderr if err else sys.stdout, flush=True)
        line = f"{now_iso()} {self._tag} {msg}\n"
        if self.path is None:
            self._held.append(line)
        else:
            self._append(line)

    def _append(self, text: str) -> None:
        if self._broken:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as err:  # said once, loudly; a failing log must not hide the run's own error
            self._broken = True
            print(f"[bench] warning: cannot append to {str(self.path)!r} ({err}); run.log stops here",
                  file=sys.stderr)

    def attach(self, run_dir: Path) -> None:
        """Start writing (once ``run_dir`` exists)."""
        if self.path is not None or not Path(run_dir).is_dir():
            return
        self.path = Path(run_dir) / "run.log"
        self._append("".join(self._held))
        self._held = []
        self._handler = _LineHandler(self)
        logging.getLogger("bench").addHandler(self._handler)

    def close(self) -> None:
        if self._handler is not None:
            logging.getLogger("bench").removeHandler(self._handler)
            self._handler = None


class _LineHandler(logging.Handler):
    def __init__(self, runlog: RunLog):
        super().__init__(level=logging.INFO)
        self.runlog = runlog

    def emit(self, record: logging.LogRecord) -> None:
        self.runlog.note(f"{record.levelname.lower()} {record.name}: {record.getMessage()}", echo=False)
