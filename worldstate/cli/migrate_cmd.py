"""``worldstate migrate``: create or upgrade the store's schema, then exit (idempotent).

Deploys run it once before starting servers (compose: a one-shot service; k8s: an init
container). Servers also create a missing schema when they open, so running it is never
required for correctness; it makes the first start predictable and reports the version."""

from __future__ import annotations

import argparse
import os
from typing import Any

from worldstate.store import Store, schema


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "migrate",
        help="create or upgrade the store's schema (idempotent) and exit",
        description="Create the worldstate tables in the store if missing, or upgrade them; "
        "safe to run any number of times, also while servers run.",
    )
    p.add_argument("--store", help="store URL (default: $WORLDSTATE_STORE_URL)")


async def run(args: argparse.Namespace) -> int:
    url = args.store or os.environ.get("WORLDSTATE_STORE_URL")
    if not url:
        raise SystemExit("worldstate migrate: give --store URL or set WORLDSTATE_STORE_URL")
    store = Store(url)
    try:
        await store.open()
    finally:
        await store.close()
    print(f"worldstate migrate: schema version {schema.SCHEMA_VERSION} ready at {store.describe()}")
    return 0
