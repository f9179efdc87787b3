"""The CLI for a person at a terminal (issue #26): help that fits 80 columns, flags without a `<bool>`,
one example per command that names a real command; every `passerelle ...` the README shows exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from app import cli
from app.cli.examples import EXAMPLES

README = Path(__file__).resolve().parents[2] / "README.md"


def _root() -> Any:
    return typer.main.get_command(cli.app)


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, sub in command.commands.items():
        found += _leaves(sub, (*path, name)) if hasattr(sub, "commands") else [(*path, name)]
    return found


LEAVES = _leaves(_root())


def _resolve(words: list[str]) -> tuple[Any, list[str]]:
    """The command the words name (groups walked), and the words left for it; KeyError for an unknown one."""
    command: Any = _root()
    rest = list(words)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        if name not in command.commands:
            raise KeyError(name)
        command = command.commands[name]
    return command, rest


def test_the_tree_is_found() -> None:
    # The walk itself: a regression of it would make every test below vacuous.
    assert ("flux", "ingest") in LEAVES and ("serve",) in LEAVES and len(LEAVES) > 30


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_help_fits_80_columns_ends_with_its_example_and_shows_no_bool(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip("\n").splitlines()
    too_long = [line for line in lines if len(line) > 80]
    assert not too_long, too_long
    assert "<bool>" not in result.output and "│" not in result.output
    # A flag is listed alone: `--json  Print...`, never `--json <something>`.
    command, _ = _resolve(list(path))
    for param in command.params:
        if getattr(param, "is_flag", False) and param.name != "help":
            for opt in param.opts:
                flag_lines = [line for line in lines if line.strip().startswith(opt + " ")]
                assert all(not line.strip()[len(opt) :].startswith(" <") for line in flag_lines), flag_lines
    assert lines[-2].strip() == "Example:"
    assert lines[-1].strip() == EXAMPLES[" ".join(path)]


def test_every_example_names_a_command_with_options_it_accepts(tmp_path, monkeypatch) -> None:
    assert set(EXAMPLES) == {" ".join(p) for p in LEAVES}
    # The files and directory the examples read, so that click's existence checks pass.
    monkeypatch.chdir(tmp_path)
    for name in ("RSABEM.xml.gz", "orientations.csv", "RETOUR.csv"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "inbox").mkdir()
    for key, example in EXAMPLES.items():
        words = shlex.split(example)
        assert words[0] == "passerelle", example
        command, rest = _resolve(words[1:])
        assert not hasattr(command, "commands"), example
        assert command.name == key.split()[-1]
        # Parsing only: a wrong option, a missing argument or a bad value raises click's UsageError.
        command.make_context(key, rest)


def _readme_commands() -> list[str]:
    """Each `passerelle ...` the README shows, in code blocks and code spans, cut at a comment."""
    text = README.read_text(encoding="utf-8")
    found = []
    for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S):
        found += [line.split(" #")[0] for line in block.splitlines()]
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found += re.findall(r"`([^`]+)`", prose.replace("\n", " "))
    commands = []
    for snippet in found:
        for match in re.finditer(r"(?<![\w/-])passerelle\s+([a-z].*)", snippet):
            commands.append(match.group(1).strip())
    return commands


def test_every_command_the_readme_shows_exists_with_its_options() -> None:
    commands = _readme_commands()
    # Hand-counted: at least the flux, ft, export, audit and PostgreSQL blocks' lines.
    assert len(commands) > 30
    for shown in commands:
        words = shown.split()
        try:
            command, rest = _resolve(words)
        except KeyError as exc:
            raise AssertionError(f"README shows `passerelle {shown}`: no command {exc}") from None
        if hasattr(command, "commands"):
            continue  # a group named in prose (`passerelle audit`)
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        for option in re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(rest)):
            assert option in known or option == "-1", f"`passerelle {shown}`: {option} unknown"


def test_every_setting_is_in_the_readme_table() -> None:
    from app.settings import Settings

    section = README.read_text(encoding="utf-8").split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented: set[str] = set()
    for row in (line for line in section.splitlines() if line.startswith("| `")):
        documented.update(re.findall(r"PASSERELLE_[A-Z0-9_]+", row))
        first = row.split("|")[1]
        # `PASSERELLE_FT_AUTH_URL` / `_API_URL`: a suffix continues a full name of the same cell.
        for suffix in re.findall(r"`(_[A-Z0-9_]+)`", first):
            for full in re.findall(r"PASSERELLE_[A-Z0-9_]+", first):
                documented.update(full[: m.start()] + suffix for m in re.finditer("_", full))
    settings = {f"PASSERELLE_{name.upper()}" for name in Settings.model_fields}
    assert len(settings) > 100
    assert sorted(settings - documented) == []


def _groups(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, sub in command.commands.items():
        if hasattr(sub, "commands"):
            found += _groups(sub, (*path, name))
    return found


@pytest.mark.parametrize("path", _groups(_root()), ids=lambda p: " ".join(p) or "passerelle")
def test_a_group_help_fits_80_columns(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert all(len(line) <= 80 for line in result.output.splitlines()), result.output
    assert "<bool>" not in result.output and "│" not in result.output and "Commands:" in result.output
