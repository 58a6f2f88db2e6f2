"""``worldstate keys list|rotate|revoke --store URL``: the world's bus keys.

Every bus message is signed with a key derived from the world's current bus key for its
sender (`worldstate.bus.SignedBus`, ``docs/security.md``). Running servers re-read the keys
every ``Config.bus_key_refresh`` seconds, so a change here reaches the mesh within about
that long. Key material is never printed.

- ``list``: key ids, when made, which one signs, which are revoked; revoked server ids.
  It opens the store read-only but reads ``ws_meta``, which holds secrets and is not granted
  to the inspector role: run it with the app role.
- ``rotate``: a new key, accepted by every server from its next re-read and signing from
  ``--grace`` seconds (30) later, so nothing is dropped; the previous ones stay accepted
  until revoked. ``--retire-previous`` makes it sign at once and revokes the others
  (servers that have not re-read are cut off until they do: after a compromise, that is
  the point).
- ``revoke --server ID``: every message signed in that server's name is dropped from now
  on, whichever key it uses (for good: a replacement joins under a new id).
  ``revoke --key ID``: that key is no longer accepted (not the current one: rotate first).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from worldstate.store import Store, bus_keys


def add_parser(sub: Any) -> None:
    p = sub.add_parser("keys", help="list, rotate or revoke the mesh's bus keys")
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (
        ("list", "key ids and states, revoked servers (no key material)"),
        ("rotate", "make a new key current (previous ones stay accepted)"),
        ("revoke", "refuse a server's messages, or a key"),
    ):
        a = actions.add_parser(name, help=text)
        a.add_argument("--store", help="store URL (default: WORLDSTATE_STORE_URL)")
        if name == "list":
            a.add_argument("--json", action="store_true", help="print JSON")
        if name == "rotate":
            a.add_argument(
                "--retire-previous",
                action="store_true",
                help="sign with the new key at once and revoke every previous key "
                "(after a compromise)",
            )
            a.add_argument(
                "--grace",
                type=float,
                default=bus_keys.DEFAULT_GRACE,
                help="seconds before the new key signs; longer than every server's "
                f"WORLDSTATE_BUS_KEY_REFRESH (default {bus_keys.DEFAULT_GRACE:g})",
            )
        if name == "revoke":
            who = a.add_mutually_exclusive_group(required=True)
            who.add_argument("--server", help="the server id to revoke")
            who.add_argument("--key", type=int, help="the key id to revoke")
            a.add_argument("--reason", default="", help="why (kept in the store)")


async def run(args: argparse.Namespace) -> int:
    url = args.store or os.environ.get("WORLDSTATE_STORE_URL")
    if not url:
        print("worldstate keys: give --store URL or set WORLDSTATE_STORE_URL", file=sys.stderr)
        return 2
    now = time.time()
    store = Store(url, pool_size=1, read_only=args.action == "list")
    try:
        await store.open()
        if args.action == "list":
            ring = await store.run(bus_keys.read, "read the bus keys", read=True)
            _print_list(ring, as_json=args.json)
            return 0
        if args.action == "rotate":
            kid = await store.run(
                lambda c: bus_keys.rotate(
                    c, now, retire_previous=args.retire_previous, grace=args.grace
                ),
                "rotate the bus key",
            )
            if args.retire_previous:
                print(f"bus key {kid} signs now; every previous key is revoked")
            else:
                print(
                    f"bus key {kid} is accepted now and signs from {args.grace:g} s from now; "
                    "previous keys stay accepted until revoked"
                )
            return 0
        if args.server is not None:
            await store.run(
                lambda c: bus_keys.revoke_server(c, args.server, now, args.reason),
                "revoke a server",
            )
            print(f"server {args.server!r} revoked: its messages are dropped from now on")
        else:
            await store.run(lambda c: bus_keys.revoke_key(c, args.key, now), "revoke a key")
            print(f"bus key {args.key} revoked")
        return 0
    finally:
        await store.close()


def _print_list(ring: bus_keys.Keyring, *, as_json: bool) -> None:
    if as_json:
        doc = {
            "keys": [
                {
                    "id": k.key_id,
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                    "current": k.current,
                    "active_at": k.active_at,
                }
                for k in ring.keys
            ],
            "revoked_servers": {
                sid: {"revoked_at": at, "reason": why}
                for sid, (at, why) in sorted(ring.revoked_servers.items())
            },
        }
        print(json.dumps(doc, indent=2))
        return
    if not ring.keys:
        print("no bus keys yet (the first server to start makes one)")
    now = time.time()
    for k in ring.keys:
        state = "newest" if k.current else "revoked" if k.revoked_at else "accepted"
        made = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(k.created_at))
        later = f", signs in {k.active_at - now:.0f} s" if k.active_at > now else ""
        print(f"key {k.key_id:>3}  {state:<8}  made {made} UTC{later}")
    for sid, (at, why) in sorted(ring.revoked_servers.items()):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))
        print(f"server {sid!r} revoked {when} UTC{': ' + why if why else ''}")


__all__ = ["add_parser", "run"]
