"""The README's and the docs' commands work as written.

Every command in README.md and docs/*.md (docs/extending.md excepted: tests/test_extending.py runs its worked
example literally), from ```bash blocks and inline `code` alike, is checked with the real program:

* ``python -m bench ...`` / ``bench ...``: composed by the CLI (``--cfg job --resolve``, the first cell of a
  sweep; ``--help`` printed);
* ``python -m bench.report`` / ``bench.verify`` / ``bench.perf`` / ``bench.perf.overhead``: parsed by the tool's own
  argparse parser, reached through its ``main`` (parsing only: the tool never runs);
* ``python -m bench.tune ...``: composed and checked as the tool does before its first trial
  (:func:`bench.tune.spec.check`: the tune.* values and the method's search space; no dataset is read);
* ``python -m bench.train ...``: composed with Hydra's compose API against ``bench/train/conf`` (``--config-name``
  respected) and its typed config built;
* ``bench.run(...)`` in ```python blocks: composed by :func:`bench.api.compose`.

Placeholders (``<TAB>``, ``...``) are skipped. The documented quoting of a non-ASCII path runs for real, and every
repository path and relative link in the docs exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import REPO

README = REPO / "README.md"
EXCLUDED_DOCS = {"docs/extending.md"}  # run literally by tests/test_extending.py
DOCS = [README] + [p for p in sorted((REPO / "docs").glob("*.md"))
                   if p.relative_to(REPO).as_posix() not in EXCLUDED_DOCS]
SEPARATORS = {"&&", "||", ";", "|"}
REDIRECTS = {">", ">>", "2>", "<"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
#: module -> how to check it; argparse tools by their ``main(argv)``
ARGPARSE_MAINS = {
    "bench.report": ("bench.report.__main__", "main"),
    "bench.verify": ("bench.verify", "main"),
    "bench.perf": ("bench.perf.throughput", "main"),
    "bench.perf.overhead": ("bench.perf.overhead", "main"),
}
TOOLS = {"bench", "bench.train", "bench.tune", *ARGPARSE_MAINS}


def rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


# ---------------------------------------------------------------------------------------------- extraction

def _sections(text: str) -> list[tuple[str, str]]:
    """(title, body) of every ``## `` section; the text before the first one has the title ``""``."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return [("", parts[0])] + list(zip(parts[1::2], parts[2::2]))


def _fenced(body: str, langs: tuple[str, ...]) -> list[str]:
    return [b for lang, b in re.findall(r"^```(\w*)\n(.*?)^```", body, flags=re.S | re.M) if lang in langs]


def _inline_spans(body: str) -> list[str]:
    """Inline `code` spans of the prose (fenced blocks removed); a span may wrap onto the next line."""
    prose = re.sub(r"^```.*?^```", "", body, flags=re.S | re.M)
    spans = []
    for para in re.split(r"\n\s*\n", prose):
        spans += [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", para)]
    return spans


def _command_lines(body: str) -> list[str]:
    """Shell lines of ```bash blocks (continuations joined) and the inline `code` spans of the prose."""
    lines = []
    for block in _fenced(body, ("bash",)):
        lines += [ln.strip() for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]
    return lines + _inline_spans(body)


def _commands(line: str) -> list[tuple[str, list[str]]]:
    """(tool, arguments) of every ``python -m bench[.x]`` / ``bench`` command on a shell line."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split, lex.commenters = True, "#"
    try:
        tokens = list(lex)
    except ValueError:  # not shell (an unbalanced quote in prose)
        return []
    commands, cur, redirect = [], [], False
    for tok in tokens + [";"]:
        if tok in SEPARATORS:
            commands.append(cur)
            cur = []
        elif tok in REDIRECTS or redirect:  # `> file`: not an argument
            redirect = tok in REDIRECTS
        else:
            cur.append(tok)
    out = []
    for cmd in commands:
        while cmd and ENV_ASSIGNMENT.match(cmd[0]):  # WANDB_MODE=offline python -m bench ...
            cmd = cmd[1:]
        if cmd[:2] in (["python", "-m"], ["python3", "-m"]) and len(cmd) > 2 and (
                cmd[2] == "bench" or cmd[2].startswith("bench.")):
            out.append((cmd[2], cmd[3:]))
        elif cmd[:1] == ["bench"]:
            out.append(("bench", cmd[1:]))
    return [(tool, args) for tool, args in out if not (tool == "bench" and "-sc" in args)]  # completion: test_packaging


def _is_placeholder(args: list[str]) -> bool:
    return any("<" in a or a == "..." for a in args)  # method=<TAB>, RUN_DIR stays: it parses as a path


def doc_commands(path: Path) -> list[tuple[str, str, list[str]]]:
    """(section title, tool, arguments) of every distinct command of one page, in order."""
    cmds, seen = [], set()
    for title, body in _sections(path.read_text()):
        for line in _command_lines(body):
            for tool, args in _commands(line):
                if not _is_placeholder(args) and (title, tool, tuple(args)) not in seen:
                    seen.add((title, tool, tuple(args)))
                    cmds.append((title, tool, args))
    return cmds


ENTRIES = [(rel(p), title, tool, args) for p in DOCS for title, tool, args in doc_commands(p)]


def _unique(entries):
    out, seen = [], set()
    for doc, _, tool, args in entries:
        if (tool, tuple(args)) not in seen:
            seen.add((tool, tuple(args)))
            out.append((doc, tool, args))
    return out


COMMANDS = _unique(ENTRIES)


# ---------------------------------------------------------------------------------------------- checkers

def _first_cell(args: list[str]) -> list[str]:
    """Overrides of a command without its flags; a sweep (a,b,c) becomes its first value."""
    overrides = [a for a in args if not a.startswith("-") and a not in ("job", "hydra", "all")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [f"{o.get_key_element()}={next(iter(o.sweep_string_iterator()))}" if o.is_sweep_override() else raw
            for o, raw in zip(parsed, overrides)]


def _main(monkeypatch, capsys, argv: list[str]) -> str:
    from bench.cli import main

    monkeypatch.setattr(sys, "argv", ["bench", *argv])
    GlobalHydra.instance().clear()
    try:
        main()
    except SystemExit as e:
        assert e.code in (None, 0), f"bench {shlex.join(argv)} exited {e.code}: {capsys.readouterr()}"
    finally:
        GlobalHydra.instance().clear()
    return capsys.readouterr().out


def check_bench(args, monkeypatch, capsys):
    if "--help" in args or "-h" in args:
        assert "== Configuration groups ==" in _main(monkeypatch, capsys, args)
        return
    out = _main(monkeypatch, capsys, ["--cfg", "job", "--resolve", *_first_cell(args)])
    cfg = OmegaConf.create(out)
    assert {"method", "task", "dataset", "run"} <= set(cfg) and "${" not in out


class _Parsed(Exception):
    def __init__(self, namespace):
        self.namespace = namespace


def check_argparse(tool, args, capsys) -> argparse.Namespace:
    """Parse ``args`` with the tool's own parser, reached through its ``main(argv)``; stop right after parsing."""
    import importlib

    module, func = ARGPARSE_MAINS[tool]
    main = getattr(importlib.import_module(module), func)
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, a=None, namespace=None):
        raise _Parsed(original(self, a, namespace))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        try:
            main(list(args))
        except _Parsed as done:
            return done.namespace
        except SystemExit as e:
            raise AssertionError(f"python -m {tool} {shlex.join(args)}: exit {e.code}: {capsys.readouterr().err}")
    raise AssertionError(f"python -m {tool}: main() returned without parsing its arguments")


def check_train(args) -> dict:
    """Compose ``python -m bench.train ARGS`` with Hydra's compose API and build its typed config."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from bench.train.common import CONF_DIR

    name, overrides, rest = "adm64", [], list(args)
    while rest:
        a = rest.pop(0)
        if a in ("--config-name", "-cn"):
            name = rest.pop(0)
        elif a.startswith("--config-name="):
            name = a.split("=", 1)[1]
        else:
            assert not a.startswith("-"), f"python -m bench.train: flag {a!r} is not checked here; add it to the test"
            overrides.append(a)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), job_name="bench_train", version_base="1.3"):
            cfg = compose(config_name=name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert str(plain.get("_target_", "")).startswith("bench.train."), plain.get("_target_")
    instantiate(plain, _convert_="all")  # the typed config: field names and the class exist
    return plain


def check(tool, args, monkeypatch, capsys):
    assert tool in TOOLS, f"python -m {tool}: no such tool (known: {sorted(TOOLS)}); a stale module path?"
    if tool == "bench":
        check_bench(args, monkeypatch, capsys)
    elif tool == "bench.train":
        check_train(args)
    elif tool == "bench.tune":
        from bench.tune.spec import check as check_tune

        assert not any(a.startswith("-") for a in args), f"python -m bench.tune takes no flags: {args}"
        check_tune(args)
    else:
        check_argparse(tool, args, capsys)


# ---------------------------------------------------------------------------------------------- tests

def test_the_docs_have_the_commands_a_newcomer_types():
    readme = [(t, tool, a) for d, t, tool, a in ENTRIES if d == "README.md"]
    setup = [(tool, a) for t, tool, a in readme if t == "Set up (two commands)"]
    usage = [(tool, a) for t, tool, a in readme if t == "Usage"]
    assert len(setup) >= 2 and ("bench", []) in setup  # the main job, and the baseline beside it
    assert len(usage) >= 7  # the tour: one run, a sweep, the report, verify, SLURM ...
    assert {"bench", "bench.report", "bench.verify"} <= {tool for tool, _ in usage}
    assert any("-m" in a for tool, a in usage if tool == "bench")  # a sweep
    assert any("hydra/launcher=slurm" in a for tool, a in usage if tool == "bench")  # a SLURM sweep
    tour = dict(_sections(README.read_text()))["Usage"]
    assert any("bench.run(" in b for b in _fenced(tour, ("python",)))  # the Python API
    for _, _, tool, args in ENTRIES:  # "show the config" means the resolved one
        if tool == "bench" and "--cfg" in args:
            assert "--resolve" in args, args
    tools = {(d, tool) for d, _, tool, _ in ENTRIES}
    assert {("docs/performance.md", "bench.perf"), ("docs/performance.md", "bench.perf.overhead"),
            ("docs/embedded-priors.md", "bench.train"), ("docs/results.md", "bench.verify"),
            ("docs/metrics-and-reports.md", "bench.report"), ("docs/tuning.md", "bench.tune")} <= tools
    assert {tuple(a) for _, _, t, a in ENTRIES if t == "bench.train"} >= {("--config-name", "ldm_sr"),
                                                                          ("--config-name", "gan64")}


def test_set_up_is_what_ci_runs():
    """README's two set-up commands are the ones .ci/run executes (install + tests)."""
    (block,) = _fenced(dict(_sections(README.read_text()))["Set up (two commands)"], ("bash",))
    lines = [ln for ln in block.splitlines() if ln and not ln.startswith("#")]
    assert lines == ['python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[dev]" && python -m bench',
                     "python -m pytest -q -n auto"]
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert 'pip install -e ".[dev]"' in ci and "python -m pytest -q -n auto" in ci


def test_every_page_is_linked_from_the_readme():
    text = README.read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"]({rel(page)})" in text, f"README does not link {rel(page)}"


@pytest.mark.parametrize("doc, tool, args", COMMANDS,
                         ids=[f"{d}: {tool} {shlex.join(a)[:60]}" for d, tool, a in COMMANDS])
def test_doc_command_works(doc, tool, args, monkeypatch, capsys):
    check(tool, args, monkeypatch, capsys)


@pytest.mark.parametrize("tool, args", [
    ("bench", ["method=no_such_method"]),
    ("bench", ["task=sr4", "run.no_such_knob=1"]),
    ("bench.report", ["--no-such-flag"]),
    ("bench.verify", ["results", "--atol", "tiny"]),
    ("bench.perf", ["--batch", "0"]),
    ("bench.perf.overhead", []),
    ("bench.train", ["--config-name", "no_such_config"]),
    ("bench.train", ["stepz=20"]),
    ("bench.perf_overhead", ["results"]),
])
def test_the_checks_reject_a_wrong_command(tool, args, monkeypatch, capsys):
    with pytest.raises(Exception):
        check(tool, args, monkeypatch, capsys)


def test_commands_are_found_where_docs_write_them():
    line = ('WANDB_MODE=offline python -m bench logger=wandb && python -m bench.report --name x > log; '
            'bench -sc install=bash')
    assert _commands(line) == [("bench", ["logger=wandb"]), ("bench.report", ["--name", "x"])]
    body = "Run `python -m\nbench.verify results` then\n\n```bash\npython -m bench.perf \\\n  --device cpu\n```\n"
    assert [c for ln in _command_lines(body) for c in _commands(ln)] == [
        ("bench.perf", ["--device", "cpu"]), ("bench.verify", ["results"])]


def test_python_api_snippets_compose(monkeypatch):
    """``bench.run(...)`` in the docs' ```python blocks: composed as run() would, without running."""
    import bench
    from bench.api import compose

    calls = []

    def fake_run(*a, **kw):
        cfg = compose(*a, **kw)
        OmegaConf.to_container(cfg, resolve=True)
        calls.append(cfg)
        return Path("results")

    monkeypatch.setattr(bench, "run", fake_run)
    snippets = [b for p in DOCS for b in _fenced(p.read_text(), ("python",)) if "bench.run(" in b]
    assert snippets
    for code in snippets:
        exec(compile(code, "<doc snippet>", "exec"), {})
    assert len(calls) >= len(snippets) and all(c.method and c.task for c in calls)


def test_no_unchecked_command_blocks():
    """A command in an untagged fence would escape these checks: mark command blocks ```bash."""
    for p in DOCS:
        for block in _fenced(p.read_text(), ("",)):
            assert not re.search(r"^\s*(python3? -m bench|bench )", block, flags=re.M), (rel(p), block[:80])


# ---------------------------------------------------------------------------------------------- paths, links

REPO_PATH = re.compile(r"^(bench|conf|datasets|docs|reports|tests|tools|\.ci)/[A-Za-z0-9_./-]*$")
GENERATED = ("reports/main/", "bench/_conf", "bench/_datasets", "bench/_tuned")  # written by a report / an install


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def stale_refs(doc: Path) -> list[str]:
    """Repository paths in inline code and relative links (with their #anchors) of a page that do not exist."""
    text = doc.read_text()
    missing = []
    for span in _inline_spans(text):
        path = span.split("::")[0]
        if REPO_PATH.match(path) and not path.startswith(GENERATED) and not (REPO / path).exists():
            missing.append(span)
    for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)):
        if re.match(r"^[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            missing.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            missing.append(f"{target} (no such heading)")
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=[rel(p) for p in DOCS])
def test_paths_and_links_exist(doc):
    assert stale_refs(doc) == [], f"{rel(doc)}: stale paths or links"


def test_the_path_check_catches_stale_references(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n## Weights & Biases\n\nSee `bench/perf.py`, `bench/perf/cells.py`,\n"
                    "`bench/imageio.py::load_image`, [a](#weights--biases), [b](#nowhere), [c](missing.md),"
                    " [d](https://example.org).\n")
    assert stale_refs(page) == ["bench/perf.py", "#nowhere (no such heading)", "missing.md"]
    assert _slug("Where we differ from the official code, and why") == "where-we-differ-from-the-official-code-and-why"


def test_documented_quoting_of_a_non_ascii_path_runs(tmp_path, monkeypatch, capsys):
    """docs/usage.md's `'dataset.root="/data/Bilder/Größe 1"'`, split as the shell splits it, on a real folder."""
    import numpy as np
    from PIL import Image

    (args,) = {tuple(a) for d, _, t, a in ENTRIES if d == "docs/usage.md" and any("Größe 1" in x for x in a)}
    folder = tmp_path / "Bilder" / "Größe 1"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    argv = [a.replace("/data/Bilder/Größe 1", str(folder)) for a in args]
    assert any(a == f'dataset.root="{folder}"' for a in argv)  # the shell keeps Hydra's quotes
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "results"
    out = _main(monkeypatch, capsys, [*argv, "dataset.image_size=16", f"run.results_root={root}",
                                      "run.progress=false"])
    assert re.search(r"images +: 2", out), out
    (config,) = root.rglob("config.yaml")
    assert OmegaConf.load(config).dataset.root == str(folder)
