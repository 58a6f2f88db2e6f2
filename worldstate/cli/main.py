"""Entry point of the ``worldstate`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from worldstate.cli import (
    checkpoint_cmd,
    coordinator_cmd,
    inspect_cmd,
    keys_cmd,
    migrate_cmd,
    probe_cmd,
    serve_cmd,
    simulate_cmd,
)
from worldstate.errors import WorldStateError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="worldstate",
        description="World-state backend for a mesh of game servers: operator and demo tools.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True)
    inspect_cmd.add_parser(sub)
    simulate_cmd.add_parser(sub)
    coordinator_cmd.add_parser(sub)
    checkpoint_cmd.add_parser(sub)
    serve_cmd.add_parser(sub)
    migrate_cmd.add_parser(sub)
    probe_cmd.add_parser(sub)
    keys_cmd.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # `worldstate inspect ... | head`: the reader left; exit quietly like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command in ("inspect", "checkpoint"):
            url = args.store or os.environ.get("WORLDSTATE_STORE_URL")
            if not url:
                print(
                    f"worldstate {args.command}: give --store URL or set WORLDSTATE_STORE_URL",
                    file=sys.stderr,
                )
                return 2
            if args.command == "inspect":
                return asyncio.run(inspect_cmd.run(args, url))
            return asyncio.run(checkpoint_cmd.run(args, url))
        if args.command == "keys":
            return asyncio.run(keys_cmd.run(args))
        if args.command == "coordinator":
            return asyncio.run(coordinator_cmd.run(args))
        if args.command == "serve":
            return asyncio.run(serve_cmd.run(args))
        if args.command == "migrate":
            return asyncio.run(migrate_cmd.run(args))
        if args.command == "probe":
            return probe_cmd.run(args)
        return asyncio.run(simulate_cmd.run(args))
    except WorldStateError as e:
        print(f"worldstate {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
