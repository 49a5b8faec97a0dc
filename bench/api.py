"""A small Python API for notebooks: one call runs one cell exactly as ``python -m bench`` would.

::

    import bench
    run_dir = bench.run(method="ddrm", task="sr4", steps=20, dataset__limit=2)
    run_dir = bench.run("dps", "inpaint", overrides=["steps=50", "model=adm64_imagenet96"])
    run_dir = bench.run("my_method", "my_task", config_dirs=["/path/to/my/conf"])   # docs/extending.md

Keyword overrides become Hydra overrides ``key=value``: ``__`` in a key stands for a dot
(``dataset__limit=2`` -> ``dataset.limit=2``); values are written in Hydra's grammar (True -> true,
None -> null, lists -> [a,b], strings quoted when they contain special characters). ``overrides``
passes raw override strings (``+experiment=...`` is a sweep: use the CLI's ``-m`` for those).
``config_dirs`` are extra config directories searched after the package's ``conf/`` (Hydra's
``hydra.searchpath``), for methods, tasks, datasets and models defined outside the package.

The config is composed with Hydra's compose API against the package's ``conf/`` and run by the CLI's
own :func:`bench.cli.run_from_config`, so results, run directories and resume behave as the CLI's. Hydra's
global state is restored afterwards (also on errors), so the call can be repeated, or made from inside
another Hydra application.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

_PLAIN = re.compile(r"^[A-Za-z0-9_./:+\-]*$")


def _value(v) -> str:
    """A Python value in Hydra's override grammar."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (Path,)):
        v = str(v)
    if isinstance(v, str):
        return v if _PLAIN.match(v) and v not in ("", "null", "true", "false") else "'" + v.replace("'", "\\'") + "'"
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, Sequence):
        return "[" + ",".join(_value(x) for x in v) + "]"
    raise TypeError(f"bench.run: cannot write {v!r} ({type(v).__name__}) as a Hydra override; "
                    "pass it as a string in overrides=[...]")


def to_overrides(method: str | None = None, task: str | None = None, overrides: Sequence[str] = (),
                 config_dirs: Sequence[str | Path] = (), **kw) -> list[str]:
    """The Hydra override list :func:`run` composes (exposed for inspection and tests)."""
    if isinstance(overrides, str):
        raise TypeError("bench.run: overrides must be a list of strings, e.g. overrides=['steps=10']")
    out = [f"method={method}"] if method is not None else []
    out += [f"task={task}"] if task is not None else []
    out += [f"{key.replace('__', '.')}={_value(val)}" for key, val in kw.items()]
    out += list(overrides)
    if config_dirs:
        dirs = []
        for d in config_dirs:
            p = Path(d).expanduser().resolve()
            if not p.is_dir():
                raise FileNotFoundError(f"bench.run: config_dirs entry {str(d)!r} is not a directory. Fix: pass "
                                        "the folder that holds your method/, task/, dataset/ or model/ groups")
            dirs.append(f"file://{p}")
        out.append("hydra.searchpath=[" + ",".join(dirs) + "]")
    return out


def compose(method: str | None = None, task: str | None = None, overrides: Sequence[str] = (),
            config_dirs: Sequence[str | Path] = (), **kw):
    """The resolved-on-demand DictConfig :func:`run` would run (Hydra state restored afterwards)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from bench.cli import CONF_DIR

    from bench.cli_errors import problems

    ovs = to_overrides(method, task, overrides, config_dirs, **kw)
    try:
        with initialize_config_dir(config_dir=CONF_DIR, job_name="bench", version_base="1.3"):
            return hydra_compose(config_name="config", overrides=ovs)
    except Exception as err:  # Hydra's composition errors: the CLI's "did you mean" / quoting message instead
        found = problems(ovs, conf_dir=CONF_DIR, shell=False)
        if found:
            raise ValueError("\n".join(found)) from err
        raise


def run(method: str | None = None, task: str | None = None, *, overrides: Sequence[str] = (),
        config_dirs: Sequence[str | Path] = (), **kw) -> Path | None:
    """Run one (method, task) cell like ``python -m bench method=... task=... key=value ...``.

    Returns the run directory (``results/<dataset>/<task>/<method>/<steps>-<hash>``), or None when the
    method does not support the task (the reason is printed and recorded in SKIPPED.json, as the CLI
    does). Input errors raise the same exceptions the CLI prints (ValueError, DatasetError, AssetError...).
    """
    from bench.cli import run_from_config

    cfg = compose(method, task, overrides, config_dirs, **kw)
    return run_from_config(cfg, overrides=to_overrides(method, task, overrides, (), **kw))
