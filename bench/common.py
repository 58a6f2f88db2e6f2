"""Shared helpers for the benchmarks in `bench/`.

    from bench.common import machine_info, percentiles, timeit_best, write_result

    best = timeit_best(lambda: work(), repeat=5)          # seconds per call, best run
    lat = percentiles(samples, (50, 99))                  # {"p50": ..., "p99": ...}
    path = write_result("regions", {"mapping": {...}})    # bench/results/regions.json

`write_result` stores ``{"benchmark", "timestamp", "machine", "results"}``; ``machine`` is
`machine_info()`, which records the load average too, since benches often share the box.
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where `write_result` puts ``<name>.json`` unless told otherwise."""

DEFAULT_PACKAGES = ("numpy", "rtree")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, Any]:
    """What the numbers were measured on: Python, OS, CPU, load, and package versions."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": load,
        "packages": versions,
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def write_result(
    name: str,
    data: Mapping[str, Any],
    *,
    machine: Mapping[str, Any] | None = None,
    results_dir: Path | None = None,
) -> Path:
    """Write ``data`` to ``<results_dir>/<name>.json`` (atomically), stamped with the UTC time
    and `machine_info()`; returns the path. numpy scalars/arrays are converted."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad result name {name!r}")
    out_dir = RESULTS_DIR if results_dir is None else results_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": dict(machine) if machine is not None else machine_info(),
        "results": dict(data),
    }
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def percentiles(
    samples: Sequence[float] | np.ndarray[Any, Any], ps: Iterable[float] = (50, 99)
) -> dict[str, float]:
    """``{"p50": ..., "p99": ...}`` (linear interpolation); keys drop a trailing ``.0``."""
    arr = np.asarray(samples, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("percentiles of no samples")
    out: dict[str, float] = {}
    for p in ps:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {p} is outside [0, 100]")
        label = f"p{p:g}"
        out[label] = float(np.percentile(arr, p))
    return out


def timeit_best(fn: Callable[[], object], repeat: int = 5, number: int = 1) -> float:
    """Seconds per call of ``fn``: the best of ``repeat`` runs of ``number`` calls each.

    Like `timeit`, the garbage collector is off while timing."""
    if repeat < 1 or number < 1:
        raise ValueError("repeat and number must be >= 1")
    best = float("inf")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            best = min(best, time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return best / number


def time_samples(fn: Callable[[], object], n: int) -> list[float]:
    """Seconds taken by each of ``n`` calls of ``fn`` (feed to `percentiles`)."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A plain-text table: columns padded, numbers right-aligned."""
    body = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in body:
        cells = (
            c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)
        )
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _cell(v: object) -> str:
    if isinstance(v, float):
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def _numeric(cell: str) -> bool:
    try:
        float(cell.replace(",", "").rstrip("x%"))
    except ValueError:
        return False
    return True


def settle_gc() -> None:
    """Freeze what exists before a timed phase (pre-built ops, the open world):
    the harness's own data then adds nothing to the collector's full passes — what a game
    server does after start-up (`gc.freeze()`, see README "Operations"), so the figures
    measure worldstate's own garbage, not the harness's."""
    gc.collect()
    gc.freeze()
