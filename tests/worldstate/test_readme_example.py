"""README's first example runs as written, prints what it promises and logs no WARNING
(issue 9: a strong commit once left an unreadable cache marker that the next read dropped
with a warning)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def first_example() -> str:
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README.md has no python example"
    return block.group(1)


def test_readme_first_example_runs_without_warnings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = first_example()
    assert "sqlite+aiosqlite:///world.db" in code
    monkeypatch.chdir(tmp_path)  # the example writes world.db in the working directory
    with caplog.at_level(logging.WARNING):
        exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    out = capsys.readouterr().out
    assert "wall-1" in out and "{'wood': 20}" in out
