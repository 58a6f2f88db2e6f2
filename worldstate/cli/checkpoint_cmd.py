"""``worldstate checkpoint``: take, list, show, restore, export, import and prune world
checkpoints (`worldstate.history`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from regions import RegionKey
from worldstate.cli.tables import emit_json, table, when
from worldstate.errors import ValidationError
from worldstate.history import (
    Checkpoint,
    create_checkpoint,
    export_checkpoint,
    get_checkpoint,
    import_checkpoint,
    list_checkpoints,
    prune_checkpoints,
    restore_checkpoint,
)
from worldstate.history._checkpoint import ProgressFn
from worldstate.store import Store

EPILOG = """\
Checkpoints live in the store itself (tables ws_checkpoints, ws_checkpoint_chunks).
A checkpoint is one consistent instant of the whole world, taken without stopping writes.
Restore refuses while live leases exist (stop the servers, or --force to fence them).
The export file is gzip'd JSON lines, format "worldstate-checkpoint" version 1 (README).
"""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "checkpoint",
        help="take, list, show, restore, export, import and prune world checkpoints",
        description="World checkpoints: consistent copies of a world's durable state.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--store", help="store URL (default: $WORLDSTATE_STORE_URL)")
    v = p.add_subparsers(dest="action", required=True)

    c = v.add_parser("create", help="take a checkpoint of the whole world now")
    c.add_argument("name", nargs="?", help="a name (default: cp-<UTC time>-<id>)")
    c.add_argument("--json", action="store_true", help="print the checkpoint as JSON")
    _quiet(c)

    ls = v.add_parser("list", help="complete checkpoints, oldest first")
    ls.add_argument("--json", action="store_true")

    sh = v.add_parser("show", help="one checkpoint: counts, size, causal heads, tables")
    sh.add_argument("name", help="checkpoint name or id")
    sh.add_argument("--json", action="store_true")

    r = v.add_parser(
        "restore",
        help="put the world back exactly as the checkpoint holds it (epochs go up)",
        description=(
            "Restore a checkpoint in one transaction: every world table in its scope is "
            "replaced, every region gets a new version and its lease epoch + 1 (servers "
            "holding old state are fenced), and an incident records who restored what."
        ),
    )
    r.add_argument("name", help="checkpoint name or id")
    r.add_argument(
        "--force", action="store_true", help="restore even while live leases exist (fences them)"
    )
    r.add_argument("--by", help="who restores, for the incident record (default: user@host)")
    r.add_argument("--json", action="store_true")
    _quiet(r)

    e = v.add_parser("export", help="write a checkpoint to a file (whole world or a part)")
    e.add_argument("name", help="checkpoint name or id")
    e.add_argument("--out", required=True, help="file to write (gzip'd JSON lines)")
    e.add_argument(
        "--region",
        action="append",
        default=[],
        metavar="IX,IY,IZ",
        help="only this region (repeatable; ix,iy,iz or a Morton code)",
    )
    e.add_argument(
        "--inventory", action="append", default=[], metavar="ID", help="only this inventory"
    )
    _quiet(e)

    i = v.add_parser("import", help="read a checkpoint file into the store (then restore it)")
    i.add_argument("file", help="a file written by `checkpoint export`")
    i.add_argument("--name", help="store it under this name (default: its own)")
    i.add_argument("--restore", action="store_true", help="restore it right after importing")
    i.add_argument("--force", action="store_true", help="with --restore: fence live leases")
    i.add_argument("--json", action="store_true")
    _quiet(i)

    pr = v.add_parser("prune", help="delete all but the newest N checkpoints")
    pr.add_argument("--keep", type=int, required=True, help="checkpoints to keep")
    pr.add_argument("--json", action="store_true")


def _quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@contextlib.contextmanager
def progress_bar(args: argparse.Namespace, what: str) -> Iterator[ProgressFn | None]:
    """A rich progress display (on stderr) fed by (table, rows) callbacks."""
    if getattr(args, "no_progress", False) or getattr(args, "json", False):
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stderr)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.fields[table]}: {task.completed:,} rows"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None, table="")

        def update(table_name: str, rows: int) -> None:
            bar.update(task, completed=rows, table=table_name)

        yield update


def _row(cp: Checkpoint) -> tuple[Any, ...]:
    return (
        cp.name,
        cp.id[:8],
        when(cp.created_at),
        cp.regions,
        cp.objects,
        f"{cp.bytes / 1e6:.2f} MB",
        cp.source,
    )


HEADERS = ["name", "id", "taken", "regions", "objects", "size", "source"]


def _key(text: str) -> RegionKey:
    try:
        return RegionKey.parse(text)
    except ValueError as e:
        raise ValidationError(str(e)) from None


async def run(args: argparse.Namespace, url: str) -> int:
    store = Store(url)
    try:
        await store.open()
        result: int = await ACTIONS[args.action](args, store)
        return result
    finally:
        await store.close()


async def _create(args: argparse.Namespace, store: Store) -> int:
    with progress_bar(args, "checkpoint") as progress:
        cp = await create_checkpoint(store, args.name, progress=progress)
    if args.json:
        emit_json(cp.as_dict())
    else:
        print(
            f"checkpoint {cp.name} ({cp.id}): {cp.regions} regions, {cp.objects} objects, "
            f"{cp.rows} rows, {cp.bytes / 1e6:.2f} MB"
        )
    return 0


async def _list(args: argparse.Namespace, store: Store) -> int:
    cps = await list_checkpoints(store)
    if args.json:
        emit_json([c.as_dict() for c in cps])
    else:
        table(HEADERS, [_row(c) for c in cps])
    return 0


async def _show(args: argparse.Namespace, store: Store) -> int:
    cp = await get_checkpoint(store, args.name)
    doc = cp.as_dict()
    doc["tables"] = {t: list(c) for t, c in cp.tables.items()}
    if args.json:
        emit_json(doc)
        return 0
    for k in ("name", "id", "created_by", "source", "schema_version", "regions", "objects"):
        print(f"{k:>15}: {doc[k]}")
    print(f"{'taken':>15}: {when(cp.created_at)} ({cp.created_at:.3f})")
    print(f"{'size':>15}: {cp.bytes:,} bytes stored ({cp.raw_bytes:,} raw), {cp.rows:,} rows")
    print(f"{'scope':>15}: {doc['scope'] or 'the whole world'}")
    heads = ", ".join(f"{o}:{q}" for o, q in sorted(cp.heads.items())) or "(empty)"
    print(f"{'causal heads':>15}: {heads}")
    return 0


async def _restore(args: argparse.Namespace, store: Store) -> int:
    with progress_bar(args, f"restore {args.name}") as progress:
        report = await restore_checkpoint(
            store, args.name, force=args.force, by=args.by, progress=progress
        )
    doc = {
        "checkpoint": report.checkpoint.name,
        "id": report.checkpoint.id,
        "regions": report.regions,
        "rows": report.rows,
        "fenced": [{"region": k, "owner": o, "epoch": e} for k, o, e in report.fenced],
        "incident": report.incident_id,
        "by": report.by,
        "at": report.at,
    }
    if args.json:
        emit_json(doc)
    else:
        print(
            f"restored {report.checkpoint.name} ({report.checkpoint.id}): {report.regions} "
            f"regions at new versions and epochs, {report.rows} rows"
            + (f"; fenced {len(report.fenced)} live leases" if report.fenced else "")
        )
    return 0


async def _export(args: argparse.Namespace, store: Store) -> int:
    regions = [_key(k) for k in args.region]
    with progress_bar(args, f"export to {args.out}") as progress:
        trailer = await export_checkpoint(
            store,
            args.name,
            args.out,
            regions=regions,
            inventories=args.inventory,
            progress=progress,
        )
    print(f"wrote {args.out}: {trailer['rows']} rows ({trailer['regions']} regions)")
    return 0


async def _import(args: argparse.Namespace, store: Store) -> int:
    with progress_bar(args, f"import {args.file}") as progress:
        cp = await import_checkpoint(store, args.file, name=args.name, progress=progress)
    doc: dict[str, Any] = {"imported": cp.as_dict()}
    if args.restore:
        report = await restore_checkpoint(store, cp.id, force=args.force)
        doc["restored"] = {"regions": report.regions, "rows": report.rows}
    if args.json:
        emit_json(doc)
    else:
        print(f"imported {cp.name} ({cp.id}): {cp.regions} regions, {cp.rows} rows")
        if args.restore:
            print(f"restored it: {doc['restored']['regions']} regions")
    return 0


async def _prune(args: argparse.Namespace, store: Store) -> int:
    gone = await prune_checkpoints(store, keep=args.keep)
    if args.json:
        emit_json([c.as_dict() for c in gone])
    else:
        print(f"deleted {len(gone)} checkpoint(s)" + "".join(f"\n  {c.name}" for c in gone))
    return 0


ACTIONS: dict[str, Any] = {
    "create": _create,
    "list": _list,
    "show": _show,
    "restore": _restore,
    "export": _export,
    "import": _import,
    "prune": _prune,
}
