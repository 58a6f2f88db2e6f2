"""Every command and sub-command of the CLI answers --help (exit 0, says what it does)."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from worldstate.cli.main import build_parser


def _commands(p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = [prefix]
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out.extend(_commands(sub, (*prefix, name)))
    return out


COMMANDS = _commands(build_parser())


def test_the_commands_the_issue_names_exist() -> None:
    top = {c[0] for c in COMMANDS if c}
    assert {"serve", "coordinator", "migrate", "inspect", "simulate", "probe"} <= top
    views = {c[1] for c in COMMANDS if len(c) == 2 and c[0] == "inspect"}
    assert {"regions", "region", "servers", "conflicts", "incidents", "cache", "map"} <= views


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda c: " ".join(c) or "worldstate")
def test_help(argv: tuple[str, ...]) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    text = out.getvalue()
    assert text.startswith("usage: worldstate"), text
    assert len(text.splitlines()) >= 3
