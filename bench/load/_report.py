"""Turn what the servers recorded into ``report.json`` and ``report.html`` with PNG plots.

`summarise_run` reads the server directories of one run (worldstate or baseline) into
per-class throughput, latency percentiles (overall and per second), tick figures, errors
and bus bytes; `write_report` writes the JSON, the plots (matplotlib, Agg) and the HTML.

Classes: ``eventual`` (players moved per second; latency = send → merge at a receiver,
the eventual path's own lag measure), ``strong`` (build + mine + trade; latency = submit →
Committed/Rejected), ``causal`` (chat + quest + handover; latency = submit → Accepted, and
``delivery`` = emit → delivery at another server).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.load._history import read_json

CLASSES: dict[str, tuple[str, ...]] = {
    "eventual": ("eventual",),
    "strong": ("build", "mine", "trade"),
    "causal": ("chat", "quest", "handover"),
}
TICK = 0.05
PLOTS = ("throughput.png", "latency.png", "servers.png", "ticks.png")


def _pcts(ms: npt.NDArray[np.float64]) -> dict[str, float] | None:
    if ms.size == 0:
        return None
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "max": float(ms.max())}


def _load_npz(path: Path) -> dict[str, npt.NDArray[np.float64]]:
    try:
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError):
        return {}


def server_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "servers").iterdir() if p.is_dir())


def summarise_run(root: Path, duration: float) -> dict[str, Any]:
    """Per-class figures of one run directory (``root/servers/*``)."""
    lat: dict[str, list[npt.NDArray[np.float64]]] = defaultdict(list)
    ticks: list[npt.NDArray[np.float64]] = []
    per_server: dict[str, Any] = {}
    ok: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    shed: Counter[str] = Counter()
    errors: dict[str, Counter[str]] = defaultdict(Counter)
    moves = 0
    killed: list[str] = []
    for d in server_dirs(root):
        final = read_json(d / "final.json")
        if not isinstance(final, dict):
            killed.append(d.name)
            # killed by a fault: what it did until its last checkpoint (`Recorder.checkpoint`)
            final = read_json(d / "partial.json")
            if not isinstance(final, dict):
                continue
        for kind, arr in _load_npz(d / "latency.npz").items():
            lat[kind].append(arr.reshape(-1, 2))
        try:
            t = np.load(d / "ticks.npy").reshape(-1, 4)
        except (OSError, ValueError):
            t = np.empty((0, 4))
        ticks.append(t)
        ok.update(final.get("ok", {}))
        rejected.update(final.get("rejected", {}))
        shed.update(final.get("shed", {}))
        for kind, c in final.get("errors", {}).items():
            errors[kind].update(c)
        moves += int(final.get("moves", 0))
        over = int((t[:, 2] > TICK).sum()) if t.size else 0
        skipped = int(final.get("skipped_ticks", 0))
        per_server[d.name] = {
            "ticks": int(t.shape[0]),
            "skipped_ticks": skipped,
            "overrun_pct": 100.0 * (over + skipped) / max(1, t.shape[0] + skipped),
            "tick_ms": _pcts(t[:, 1] * 1000.0) if t.size else None,
            "players_moved_mean": float(t[:, 3].mean()) if t.size else 0.0,
            "bus": final.get("bus"),
            "store": (final.get("stats") or {}).get("store") or final.get("store"),
        }
    all_lat = {k: np.concatenate(v) if v else np.empty((0, 2)) for k, v in lat.items()}
    all_ticks = np.concatenate(ticks) if ticks else np.empty((0, 4))
    classes: dict[str, Any] = {}
    for cls, kinds in CLASSES.items():
        done = moves if cls == "eventual" else sum(ok[k] + rejected[k] for k in kinds)
        ms = (
            np.concatenate([all_lat[k][:, 1] for k in kinds if k in all_lat])
            if any(k in all_lat for k in kinds)
            else np.empty(0)
        )
        classes[cls] = {
            "ops": int(done),
            "per_s": done / duration if duration > 0 else 0.0,
            "latency_ms": _pcts(ms),
            "errors": {k: dict(errors[k]) for k in kinds if errors.get(k)},
            "shed": {k: shed[k] for k in kinds if shed.get(k)},
            "kinds": {
                k: {
                    "ok": int(ok[k]),
                    "rejected": int(rejected[k]),
                    "errors": int(sum(errors[k].values())),
                    "shed": int(shed[k]),
                    "per_s": (ok[k] + rejected[k]) / duration if duration > 0 else 0.0,
                    "latency_ms": _pcts(all_lat[k][:, 1]) if k in all_lat else None,
                }
                for k in kinds
                if cls != "eventual"
            },
        }
    if "delivery" in all_lat:
        classes["causal"]["delivery_latency_ms"] = _pcts(all_lat["delivery"][:, 1])
    if "move" in shed or "move" in errors:
        classes["eventual"]["shed"] = {"move": shed["move"]}
        classes["eventual"]["errors"] = {"move": dict(errors["move"])}
    over = int((all_ticks[:, 2] > TICK).sum()) if all_ticks.size else 0
    skipped = sum(s["skipped_ticks"] for s in per_server.values())
    return {
        "classes": classes,
        "ticks": {
            "count": int(all_ticks.shape[0]),
            "skipped": skipped,
            "overrun_pct": 100.0 * (over + skipped) / max(1, all_ticks.shape[0] + skipped),
            "duration_ms": _pcts(all_ticks[:, 1] * 1000.0) if all_ticks.size else None,
        },
        "errors": {k: dict(v) for k, v in errors.items() if v},
        "servers": per_server,
        "killed_incarnations": killed,
        "timeseries": timeseries(all_lat, all_ticks, duration),
    }


def timeseries(
    lat: Mapping[str, npt.NDArray[np.float64]],
    ticks: npt.NDArray[np.float64],
    duration: float,
    step: float = 1.0,
) -> dict[str, Any]:
    n = max(1, math.ceil(duration / step))
    t = [round(i * step, 3) for i in range(n)]
    out: dict[str, Any] = {"t": t, "step_s": step}
    for cls, kinds in CLASSES.items():
        if cls == "eventual":
            rows = lat.get("eventual", np.empty((0, 2)))
        else:
            parts = [lat[k] for k in kinds if k in lat]
            rows = np.concatenate(parts) if parts else np.empty((0, 2))
        out[cls] = _binned(rows, n, step)
    if "delivery" in lat:
        out["causal_delivery"] = _binned(lat["delivery"], n, step)
    if ticks.size:
        b = np.clip((ticks[:, 0] // step).astype(np.int64), 0, n - 1)
        moved = np.bincount(b, weights=ticks[:, 3], minlength=n)[:n]
        out["eventual"]["per_s"] = (moved / step).tolist()
        over = np.bincount(b, weights=(ticks[:, 2] > TICK).astype(float), minlength=n)[:n]
        cnt = np.bincount(b, minlength=n)[:n]
        out["tick_overrun_pct"] = (100.0 * over / np.maximum(cnt, 1)).tolist()
        out["tick_p99_ms"] = [
            float(np.percentile(ticks[b == i, 1], 99) * 1000.0) if cnt[i] else None
            for i in range(n)
        ]
    return out


def _binned(rows: npt.NDArray[np.float64], n: int, step: float) -> dict[str, list[Any]]:
    b = np.clip((rows[:, 0] // step).astype(np.int64), 0, n - 1) if rows.size else np.empty(0)
    per_s: list[float] = []
    p50: list[float | None] = []
    p95: list[float | None] = []
    p99: list[float | None] = []
    mx: list[float | None] = []
    for i in range(n):
        ms = rows[b == i, 1] if rows.size else np.empty(0)
        per_s.append(ms.size / step)
        if ms.size:
            q50, q95, q99 = np.percentile(ms, [50, 95, 99])
            p50.append(float(q50))
            p95.append(float(q95))
            p99.append(float(q99))
            mx.append(float(ms.max()))
        else:
            for col in (p50, p95, p99, mx):
                col.append(None)
    return {"per_s": per_s, "p50": p50, "p95": p95, "p99": p99, "max": mx}


# -- plots ------------------------------------------------------------------------------


def _shade(ax: Any, faults: Iterable[Mapping[str, Any]]) -> None:
    for f in faults:
        if f.get("started") is None:
            continue
        end = f.get("ended") or (f["started"] + (f.get("recovered_s") or 1.0))
        end = max(end, f["started"] + 0.5)
        ax.axvspan(f["started"], end, color="red", alpha=0.15)  # the fault
        if f.get("ended") is not None and f.get("recovered_s"):  # then until recovered
            # a kill's recovery counts from the kill, the others' from the fault's end
            since = f["started"] if f["kind"] == "kill" else f["ended"]
            if since + f["recovered_s"] > end:
                ax.axvspan(end, since + f["recovered_s"], color="orange", alpha=0.12)
        ax.text(
            f["started"],
            1.0,
            f["kind"],
            transform=ax.get_xaxis_transform(),
            fontsize=7,
            va="top",
            color="darkred",
        )


def write_plots(report: Mapping[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = report["run"]["timeseries"]
    t = ts["t"]
    faults = report.get("faults", [])
    made = []

    fig, ax = plt.subplots(figsize=(8, 4))
    for cls in CLASSES:
        ax.plot(t, ts[cls]["per_s"], label=f"{cls} ops/s")
    if "causal_delivery" in ts:
        ax.plot(t, ts["causal_delivery"]["per_s"], label="causal deliveries/s", ls="--")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xlabel("seconds")
    ax.set_ylabel("per second (all servers)")
    ax.set_title("Throughput per class")
    ax.legend(fontsize=8)
    _shade(ax, faults)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=90)
    plt.close(fig)
    made.append("throughput.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    for cls in CLASSES:
        ys = [np.nan if v is None else v for v in ts[cls]["p99"]]
        ax.plot(t, ys, label=f"{cls} p99")
    if "causal_delivery" in ts:
        ys = [np.nan if v is None else v for v in ts["causal_delivery"]["p99"]]
        ax.plot(t, ys, label="causal delivery p99", ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("ms")
    ax.set_title("Latency p99 per class (per second)")
    ax.legend(fontsize=8)
    _shade(ax, faults)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=90)
    plt.close(fig)
    made.append("latency.png")

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for name, p in report.get("processes", {}).items():
        series = p.get("series", {})
        a1.plot(series.get("t", []), series.get("cpu_pct", []), label=name)
        a2.plot(series.get("t", []), series.get("rss_mb", []), label=name)
    a1.set_ylabel("CPU %")
    a2.set_ylabel("RSS MB")
    a2.set_xlabel("seconds")
    a1.set_title("Per-process load")
    a1.legend(fontsize=7, ncol=3)
    _shade(a1, faults)
    _shade(a2, faults)
    fig.tight_layout()
    fig.savefig(out / "servers.png", dpi=90)
    plt.close(fig)
    made.append("servers.png")

    fig, ax = plt.subplots(figsize=(8, 3.5))
    if "tick_p99_ms" in ts:
        ax.plot(t, [np.nan if v is None else v for v in ts["tick_p99_ms"]], label="tick p99 ms")
        ax2 = ax.twinx()
        ax2.plot(t, ts["tick_overrun_pct"], color="tab:red", label="overrun %")
        ax2.set_ylabel("overrun %")
    ax.axhline(TICK * 1000.0, color="gray", ls=":", lw=1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("ms")
    ax.set_title("Player tick duration (p99 per second) and overrun")
    _shade(ax, faults)
    fig.tight_layout()
    fig.savefig(out / "ticks.png", dpi=90)
    plt.close(fig)
    made.append("ticks.png")
    return made


# -- html -------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return html.escape(str(v))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(report: Mapping[str, Any], out: Path) -> None:
    run = report["run"]
    cls_rows = []
    for cls, c in run["classes"].items():
        lat = c.get("latency_ms") or {}
        cls_rows.append(
            [
                cls,
                c["ops"],
                c["per_s"],
                lat.get("p50"),
                lat.get("p95"),
                lat.get("p99"),
                lat.get("max"),
                sum(sum(e.values()) for e in c.get("errors", {}).values()),
            ]
        )
    inv_rows = [
        [
            name,
            "pass" if v.get("ok") else "FAIL",
            json.dumps({k: x for k, x in v.items() if k not in ("ok", "examples")})[:300],
        ]
        for name, v in report["invariants"].items()
    ]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>worldstate load report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 6px;font-size:90%}</style>",
        "<h1>worldstate load report</h1>",
        f"<p>{html.escape(json.dumps(report['config']))}</p>",
        f"<p>machine: {html.escape(str(report['machine'].get('cpu')))}, "
        f"{report['machine'].get('cpu_count')} cores, load average "
        f"{html.escape(str(report.get('loadavg')))}</p>",
        "<h2>Per class</h2>",
        _table(
            ["class", "ops", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"], cls_rows
        ),
        f"<p>ticks: {run['ticks']['count']}, overrun {run['ticks']['overrun_pct']:.2f} %, "
        f"duration {html.escape(json.dumps(run['ticks']['duration_ms']))}</p>",
        "<h2>Invariants</h2>",
        _table(["invariant", "result", "facts"], inv_rows),
    ]
    if report.get("ratios"):
        parts += [
            "<h2>worldstate / baseline</h2>",
            _table(["class", "ratio"], list(report["ratios"].items())),
        ]
    if report.get("faults"):
        parts += [
            "<h2>Faults</h2>",
            _table(
                ["kind", "target", "started s", "ended s", "recovered s", "details", "note"],
                [
                    [
                        f["kind"],
                        f.get("target"),
                        f.get("started"),
                        f.get("ended"),
                        f.get("recovered_s"),
                        json.dumps(f.get("details") or {}, default=_plain),
                        f.get("note"),
                    ]
                    for f in report["faults"]
                ],
            ),
        ]
    if report.get("targets"):
        parts += [
            "<h2>Targets</h2>",
            _table(
                ["target", "wanted", "got", "met"],
                [
                    [k, v["wanted"], v["got"], "yes" if v["met"] else "no"]
                    for k, v in report["targets"].items()
                ],
            ),
        ]
    for p in report.get("plots", []):
        parts.append(f"<h3>{html.escape(p)}</h3><img src='{html.escape(p)}'>")
    (out / "report.html").write_text("\n".join(parts), encoding="utf-8")


def write_report(report: dict[str, Any], out: Path) -> None:
    report["plots"] = write_plots(report, out)
    (out / "report.json").write_text(
        json.dumps(report, indent=1, default=_plain) + "\n", encoding="utf-8"
    )
    write_html(report, out)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


__all__ = ["CLASSES", "PLOTS", "server_dirs", "summarise_run", "timeseries", "write_report"]
