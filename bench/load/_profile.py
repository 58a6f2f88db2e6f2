"""Where a server's time goes: py-spy samples of one server, summed by subsystem.

`record` runs ``py-spy record --format raw`` on a process for some seconds (py-spy comes
from PyPI; without it the profile is skipped with a note); `summarise` attributes every
sample to the innermost frame that belongs to a known subsystem (the SQL driver before the
strong path, so that "strong" is our own Python and "sql" the driver's).
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

SUBSYSTEMS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bench harness", ("bench/load/",)),
    ("sql driver (sqlalchemy, psycopg, aiosqlite)", ("sqlalchemy/", "psycopg/", "aiosqlite/")),
    ("mqtt client (paho, aiomqtt)", ("paho/", "aiomqtt/")),
    ("eventual codec", ("protocol/_eventual",)),
    ("eventual LWW merge", ("consistency/lww",)),
    ("eventual path", ("worldstate/eventual/",)),
    (
        "causal",
        (
            "worldstate/causal/",
            "protocol/_causal",
            "consistency/causal",
            "consistency/vector_clock",
            "store/event_log",
        ),
    ),
    ("conflicts", ("conflicts/",)),
    ("strong path + store", ("worldstate/strong/", "worldstate/store/")),
    ("mesh", ("worldstate/mesh/",)),
    ("bus adapter", ("worldstate/bus/",)),
    (
        "validation + operations",
        ("worldstate/_validation", "worldstate/operations", "worldstate/world.py"),
    ),
    ("numpy", ("numpy/",)),
    ("json (orjson/json)", ("json/",)),
    ("asyncio event loop", ("asyncio/",)),
)


ROOT_FRAMES = ("main (", "<module> (", "_run_code (", "_run_module_as_main (")


def binary() -> str | None:
    here = Path(sys.executable).with_name("py-spy")
    return str(here) if here.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, out: Path) -> str | None:
    """Sample ``pid`` for ``seconds`` into ``out``; None, or why it could not."""
    exe = binary()
    if exe is None:
        return "py-spy is not installed (pip install py-spy)"
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw",
        "-o", str(out), "--nonblocking",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    except TimeoutError:
        proc.kill()
        return "py-spy did not finish"
    if proc.returncode != 0:
        return f"py-spy failed: {err.decode(errors='replace')[-300:]}"
    return None


def summarise(
    raw: Path,
    seconds: float,
    rate: float = 50.0,
    subsystems: tuple[tuple[str, tuple[str, ...]], ...] = SUBSYSTEMS,
) -> dict[str, Any]:
    """``{"samples", "busy_fraction", "by_subsystem": {name: share of busy samples}}``."""
    by: Counter[str] = Counter()
    n = 0
    try:
        text = raw.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return {"error": str(e)}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        n += k
        frames = stack.split(";")
        name = "other"
        for frame in reversed(frames):
            if frame.startswith(ROOT_FRAMES):
                continue  # the process's entry point, not a subsystem
            name = next((s for s, pats in subsystems if any(p in frame for p in pats)), "")
            if name:
                break
        by[name or "other (C code, the loop's select, GC)"] += k
    return {
        "samples": n,
        "busy_fraction": n / (seconds * rate) if seconds > 0 else None,
        "by_subsystem": {k: v / n for k, v in by.most_common()} if n else {},
    }


__all__ = ["SUBSYSTEMS", "record", "summarise"]
