"""`conflicts` sits below `consistency` and `worldstate` and imports neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import conflicts

PACKAGE = Path(conflicts.__file__).resolve().parent


def test_importing_conflicts_loads_nothing_above_it() -> None:
    code = (
        "import sys, conflicts; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('worldstate', 'consistency')); "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    assert out.stdout.strip() == ""


def test_no_source_file_names_an_upper_package() -> None:
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        for upper in ("worldstate", "consistency"):
            assert f"import {upper}" not in text and f"from {upper}" not in text, path


def test_public_surface() -> None:
    assert sorted(conflicts.__all__) == sorted(set(conflicts.__all__))
    for name in conflicts.__all__:
        assert getattr(conflicts, name) is not None
