"""The README's commands work as written: every `python -m bench ...` / `bench ...` line (code blocks and
inline code, every section) parses and composes (`--cfg job --resolve`, the first cell of a sweep), and the
documented quoting of a non-ASCII path runs for real."""

from __future__ import annotations

import re
import shlex
import sys

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tests.conftest import REPO

README = REPO / "README.md"
SEPARATORS = {"&&", "||", ";", "|"}
REDIRECTS = {">", ">>", "2>", "<"}


def _sections(text: str) -> list[tuple[str, str]]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return list(zip(parts[1::2], parts[2::2]))


def _command_lines(body: str) -> list[str]:
    """Shell lines of ```bash blocks (continuations joined) and inline `code` spans of the prose."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", body, flags=re.S):
        lines += [ln.strip() for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]
    prose = re.sub(r"```.*?```", "", body, flags=re.S)
    lines += re.findall(r"`([^`\n]+)`", prose)
    return lines


def _bench_args(line: str) -> list[list[str]]:
    """The argument lists of every `python -m bench` / `bench` command on a shell line."""
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
        if cmd[:3] in (["python", "-m", "bench"], ["python3", "-m", "bench"]):
            out.append(cmd[3:])
        elif cmd[:1] == ["bench"]:
            out.append(cmd[1:])
    return [args for args in out if "-sc" not in args]  # completion scripts: tests/test_packaging.py


def readme_commands() -> list[tuple[str, list[str]]]:
    """(section title, arguments) of every distinct bench command in the README, in order."""
    cmds, seen = [], set()
    for title, body in _sections(README.read_text()):
        for line in _command_lines(body):
            for args in _bench_args(line):
                if any("<" in a or a == "..." for a in args):  # a placeholder such as method=<TAB>, not a command
                    continue
                if (title, tuple(args)) not in seen:
                    seen.add((title, tuple(args)))
                    cmds.append((title, args))
    return cmds


COMMANDS = readme_commands()


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


def test_the_readme_has_the_commands_a_newcomer_types():
    titles = [t for t, _ in COMMANDS]
    assert titles.count("Set up (two commands)") >= 2 and titles.count("Usage") >= 7
    for _, args in COMMANDS:  # "show the config" means the resolved one
        if "--cfg" in args:
            assert "--resolve" in args, args


@pytest.mark.parametrize("section, args", COMMANDS, ids=[f"{t[:12]}: {shlex.join(a)[:60]}" for t, a in COMMANDS])
def test_readme_command_composes(section, args, monkeypatch, capsys):
    if "--help" in args or "-h" in args:
        assert "== Configuration groups ==" in _main(monkeypatch, capsys, args)
        return
    out = _main(monkeypatch, capsys, ["--cfg", "job", "--resolve", *_first_cell(args)])
    cfg = OmegaConf.create(out)
    assert {"method", "task", "dataset", "run"} <= set(cfg) and "${" not in out


def test_documented_quoting_of_a_non_ascii_path_runs(tmp_path, monkeypatch, capsys):
    """README's `'dataset.root="/data/Bilder/Größe 1"'`, split as the shell splits it, on a real folder."""
    import numpy as np
    from PIL import Image

    (args,) = [a for _, a in COMMANDS if any("Größe 1" in x for x in a)]
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
